"""sync stage of dfdcap: clock models (device -> host), their fits, and frame association.

clock.py     ClockModel (DESIGN.md form + uncertainty)
fit.py       fit_phone_clock (round-trip probes), fit_sensor_clock (lower envelope of arrivals, drift prior)
quality.py   per-clock verdicts ("ok" / "suspect" + reasons) stored in sync.json
associate.py greedy_associate (TUM associate.py, fast), nearest_associate, one_to_one_associate
io.py        sync_session / read_sync (sync.json), TUM timestamp files, associate_files
report.py    write_sync_report (PNG)
"""
