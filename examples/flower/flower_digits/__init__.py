"""A Flower app on digits where some nodes run fedpoison attacks and the server runs fedpoison's defense."""
