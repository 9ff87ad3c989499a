"""Sentiment monitoring: watched channels are scored and stored without a reply (watch.py),
negative spikes against each channel's own baseline raise alerts (spikes.py), and reports
summarise and chart a channel's sentiment (report.py). See docs/monitoring.md."""

from bot.monitoring.spikes import SpikeCheck, SpikeConfig, check_channel, scan, scan_store, topic_of

__all__ = ["SpikeCheck", "SpikeConfig", "check_channel", "scan", "scan_store", "topic_of"]
