"""leadqual's shared library: the Lambda layer, imported by the functions, the bridge and local/.

Pure domain modules (models, campaign, scoring, compliance, voice, webhooks, tokens) import no
boto3 or httpx; adapters (sautikit, store, queue) do the I/O and accept injected clients.
"""
