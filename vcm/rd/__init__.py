"""Results store and rate-distortion analysis.

* :mod:`vcm.rd.record`: one JSON record per evaluation run (``make_record``, ``write_record``,
  ``read_record``).
* :mod:`vcm.rd.published`: RD curves from outside vcm (CompressAI results JSON, CSV) and vcm
  curves in CompressAI's format (``read_curves``, ``to_compressai_json``).
* :mod:`vcm.rd.table`: collect records into a table, one row per RD point (``collect``), and add
  published curves to it (``add_curves``).
* :mod:`vcm.rd.bd`: Bjontegaard delta rate / quality, pchip, cubic or akima (``bd_rate``,
  ``bd_quality``, ``bd_table``).
* :mod:`vcm.rd.bootstrap`: bootstrap intervals of BD values over the frames, from the records'
  per-image values (``bootstrap_interval``; ``add_intervals`` adds them to a ``bd_table``).
* :mod:`vcm.rd.plot`, :mod:`vcm.rd.report`, :mod:`vcm.rd.wandb_log`: RD plots, Markdown/HTML
  reports, W&B logging.
* :mod:`vcm.cli.rd`: the ``vcm-rd`` command.

Submodules are imported on use, so writing a record does not import pandas or matplotlib.
"""
