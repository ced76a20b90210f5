"""Code that runs on the target, shared by the remote scripts (the supervisor, the doctor's
probe). Standard library only, Python 3.6+, no module-level imports: remote._python puts a
module's source in front of a script's (`libs=`), so the names it defines are that script's
globals. The same modules import normally here, where the laptop needs the same logic.
"""
