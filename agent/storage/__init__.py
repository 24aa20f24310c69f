"""Durable records: the one database layer over SQLite and Postgres (`db`) and the store (`store`).

Imports only the incident intake, the models and the settings below it.
"""
