"""The web dashboard (templates and static assets), served by the API process."""
