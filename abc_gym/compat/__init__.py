"""Version-dependent and private third-party APIs, one module per dependency.

Everything abc_gym or agents use from a dependency that is private (underscore names,
``integrations.*``, ``masking_utils``) or that changed inside the declared version range
lives here, so a new release breaks one small module, not the package. Each module names
the versions it was checked against; CI runs the suite at the floor and at the newest.
"""
