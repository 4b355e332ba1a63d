"""The UI layer: one builder per tab, named by its task's spec (tasks/); shared pieces in api.py and picker.py."""
