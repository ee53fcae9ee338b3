"""Schedules and shipped MetaSchedule tuning records (installed as ``tvm_freq.schedules``)."""
