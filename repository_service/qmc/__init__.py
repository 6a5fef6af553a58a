"""The QMC admin page for the Site license panel (SPEC 4.9), served by the repository service."""
