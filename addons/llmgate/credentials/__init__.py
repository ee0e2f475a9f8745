"""Subscription logins: OAuth facts, credentials files kept fresh and written safely, accounts,
logging in from scratch, and the store gateway hosts share."""
