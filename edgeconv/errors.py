"""One exception type for every problem a user can fix.

The CLI turns an EdgeconvError into a one-line message and exit code 2; anything
else is a bug in edgeconv and keeps its traceback.
"""


class EdgeconvError(Exception):
    """A problem with the user's input (file, model, data, option), stated in one line."""
