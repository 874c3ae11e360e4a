"""Applications built on the suite: the synthmatch command and the local web app."""
