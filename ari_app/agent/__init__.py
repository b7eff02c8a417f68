"""The agent screen pop: live board, sign-in, cards, its routes and page."""
