"""The CLI's sub-commands: each parses, calls one library function, and prints."""
