"""leadqual's shared library: the Lambda layer, imported by the functions, the bridge and local/.

Pure domain modules (models, carrier, campaign, scoring, compliance, normalise, voice, webhooks,
signing, queue, ...) import no boto3 or httpx; adapters (sautikit, store, observability) do the
I/O and accept injected clients. tests/unit/test_domain_purity.py holds the full list.
"""
