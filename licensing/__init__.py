"""Tooling above both services: the `licensing up` dev stack and the README's settings tables.

It may import `license_backend`, `repository_service` and `shared`; none of them imports it.
"""
