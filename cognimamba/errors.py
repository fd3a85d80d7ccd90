"""One exception type for mistakes a user can fix; the CLI prints it as one red line."""


class CogniError(Exception):
    """A problem with the user's input or environment, with what to do about it.

    The CLI catches it and prints the message on one line with a non-zero exit (2 by default),
    never a traceback (unless --debug).
    """

    def __init__(self, message: str, exit_code: int = 2) -> None:
        super().__init__(message)
        self.exit_code = exit_code
