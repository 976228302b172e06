"""The chaos soak of the serverless mode on the local stack: many concurrent runs,
function processes SIGKILLed at random moments, duplicate start and step messages,
cancels and resumes, transient storage errors — then every run must have ended exactly
as design.md promises. ``make soak`` (``python -m tests.soak``) runs it; ``test_soak.py``
runs a short one in CI."""
