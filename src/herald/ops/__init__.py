"""Operations that run once per cluster: probes, alerts, scheduled backups, maintenance."""
