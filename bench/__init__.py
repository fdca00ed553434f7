"""`make bench`: bridge capacity and latency, time to first word, webhook cost and dialer throughput,
measured beside a Pipecat pipeline doing the same work. `python -m bench --help` for the options."""
