"""Heavy libraries on first use (models/lazy.py): nothing imported until used, then the real object in its place."""

import sys
import threading

from models import lazy

MODULE = """
class Thing:
    pass


def make():
    return Thing()
"""


def test_a_stand_in_imports_on_first_use_then_gives_way_to_the_real_module(tmp_path, monkeypatch):
    (tmp_path / "heavy_example.py").write_text(MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "heavy_example", raising=False)
    owner = {}
    exec("from models import lazy\nheavy = lazy.module('heavy_example')\n"
         "Thing = lazy.attribute('heavy_example', 'Thing')\nmake = lazy.attribute('heavy_example', 'make')", owner)
    assert "heavy_example" not in sys.modules and repr(owner["heavy"]) == "<lazy heavy_example>"
    thing = owner["make"]()  # a call goes through
    assert "heavy_example" in sys.modules and owner["make"] is sys.modules["heavy_example"].make
    assert isinstance(thing, owner["Thing"])  # isinstance through a stand-in
    assert owner["heavy"].Thing is owner["Thing"] and owner["heavy"] is sys.modules["heavy_example"]


def test_settled_waits_for_an_import_in_progress():
    held, release, done = threading.Event(), threading.Event(), threading.Event()

    def warm_up():
        with lazy.IMPORTS:
            held.set()
            release.wait(10)

    thread = threading.Thread(target=warm_up)
    thread.start()
    held.wait(10)
    waiter = threading.Thread(target=lambda: (lazy.settled(), done.set()))
    waiter.start()
    assert not done.wait(0.2)  # still importing
    release.set()
    assert done.wait(10)
    thread.join()
    waiter.join()
