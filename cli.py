"""The terminal commands: `python app.py train ...` (a training job with a progress bar) and
`python app.py users ...` (accounts). They use the same data directory and settings flags as the app."""

from __future__ import annotations

import argparse
import getpass
import sys

import config
from accounts import Accounts
from errors import NotFound, UserError
from models.device import set_threads
from models.loading import ModelHub
from tasks.base import Context
from training.service import TrainingService


def train_command(argv: list[str]) -> int:
    """`python app.py train ...`: the same training job as the Train tab, in this terminal with a progress bar."""
    from tqdm import tqdm

    from training import worker
    from training.store import JobState

    parser = argparse.ArgumentParser(prog="app.py train", description="Fine-tune a model with LoRA from a "
                                     "terminal; writes the same adapter as the Train tab.")
    parser.add_argument("--task", default="chat", help="the task to train (default chat)")
    parser.add_argument("--data", required=True, help="training data file (.jsonl, .json, .csv, .tsv, .txt)")
    parser.add_argument("--base", default="", help="base model: catalog name, hub id or folder")
    parser.add_argument("--name", required=True, help="name of the adapter to save")
    parser.add_argument("--preset", default="quick", choices=["quick", "balanced", "thorough"])
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a training setting, e.g. --set epochs=3 --set rank=8")
    parser.add_argument("--column", action="append", default=[], metavar="FIELD=COLUMN",
                        help="map a task field to a file column, e.g. --column prompt=question")
    parser.add_argument("--owner", default="", help="whose adapter it is (default: the first admin with accounts, "
                        "else local)")
    config.add_arguments(parser)
    args = parser.parse_args(argv)
    settings = config.from_namespace(args)
    set_threads(settings.threads)
    accounts = Accounts(settings)
    owner = args.owner or (accounts.first_admin() if accounts.enabled else None) or config.LOCAL_USER
    try:
        pairs = [item.split("=", 1) for item in args.set + args.column]
        if any(len(p) != 2 for p in pairs):
            raise UserError("Write overrides and columns as KEY=VALUE.")
        overrides = dict(p for p in pairs[:len(args.set)])
        columns = dict(p for p in pairs[len(args.set):])
        service = TrainingService(Context(settings, ModelHub(settings)), start_manager=False)
        job = service.submit(args.task, args.data, args.base, args.name, args.preset, overrides, columns,
                             owner=owner)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    bar = tqdm(total=None, unit="step", desc=f"training {args.name}")

    def progress(p) -> None:  # a training.plan.JobProgress
        bar.total, bar.n = p.total_steps, p.step
        bar.set_postfix(loss=p.last_loss[0], epoch=p.epoch)

    state = worker.run_job(settings, job["job_id"], echo=False, progress=progress)
    bar.close()
    status = service.job(job["job_id"], owner=owner)
    if state != JobState.SUCCEEDED:
        print(f"{state}: {status['error']}", file=sys.stderr)
        return 1
    print(f"{status['report']['summary']}\nSaved adapter '{status['adapter']}' under "
          f"{service.adapters.folder(owner, status['adapter'])}")
    return 0


def _password(args) -> str:
    """The new password: from standard input with --password-stdin, else asked twice at the terminal."""
    if args.password_stdin:
        return sys.stdin.readline().rstrip("\n")
    first = getpass.getpass("New password: ")
    if first != getpass.getpass("Again: "):
        raise UserError("The two passwords differ; nothing was changed.")
    return first


def _command_first(argv: list[str], commands) -> list[str]:
    """`users --data-dir X list` read as `users list --data-dir X`: the app's options go before the command too,
    as they go before everything when the app starts."""
    at = next((i for i, arg in enumerate(argv) if arg in commands), 0)
    return argv[at:] + argv[:at]


def users_command(argv: list[str]) -> int:
    """`python app.py users add|remove|list|passwd|key`: manage who may log in (with users, the app asks for a
    login) and their API keys."""
    parser = argparse.ArgumentParser(prog="app.py users", description="Manage the accounts of this data directory.")
    commands = parser.add_subparsers(dest="command", required=True)
    add = commands.add_parser("add", help="add a user")
    add.add_argument("name")
    add.add_argument("--admin", action="store_true", help="may see everything, manage users and share")
    remove = commands.add_parser("remove", help="remove a user (their adapters and collections stay)")
    remove.add_argument("name")
    commands.add_parser("list", help="list the users")
    passwd = commands.add_parser("passwd", help="set a user's password")
    passwd.add_argument("name")
    key = commands.add_parser("key", help="make a new API key for a user (printed once; revoke it in the Account "
                                           "panel)")
    key.add_argument("name")
    key.add_argument("--label", default="", help="what the key is for (shown in the Account panel)")
    for sub in (add, passwd):
        sub.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    for sub in commands.choices.values():
        config.add_arguments(sub)
    args = parser.parse_args(_command_first(argv, commands.choices))
    accounts = Accounts(config.from_namespace(args))
    try:
        if args.command == "add":
            user = accounts.add(args.name, _password(args), args.admin)
            print(f"Added {user['name']}{' (admin)' if user['admin'] else ''}. Restart the app if it runs without "
                  "accounts: from now on it asks for a login.")
        elif args.command == "remove":
            accounts.remove(args.name)
            print(f"Removed {args.name}.")
        elif args.command == "key":
            if not accounts.exists(args.name):
                raise NotFound(f"There is no user named '{args.name}'.")
            print(f"A new API key for {args.name} (shown only now; send it as 'Authorization: Bearer KEY'):")
            print(accounts.keys.create(args.name, args.label))
        elif args.command == "passwd":
            accounts.set_password(args.name, _password(args))
            print(f"Changed the password of {args.name}.")
        else:
            for user in accounts.list():
                print(f"{user['name']}{'  (admin)' if user['admin'] else ''}")
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


COMMANDS = {"train": train_command, "users": users_command}
