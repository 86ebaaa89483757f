"""Boot control: which slot boots next, trial boots with attempt counting, commit and mark bad."""
