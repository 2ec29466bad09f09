"""vcm's speed and overhead benchmarks, one module per benchmark plus the report; the command is
:mod:`vcm.cli.bench` (``make bench``)."""
