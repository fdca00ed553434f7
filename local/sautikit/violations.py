"""Every way an app can break the platform's rules, as the simulator records them (`reason` values).

Tests query them with `sim.violations(call_id=..., reason=...)` or `GET /_sim/violations`.
"""

from __future__ import annotations

VIOLATIONS: dict[str, str] = {
    # webhooks (§2, §3)
    "webhook_non_2xx": "a webhook answered outside 2xx",
    "webhook_slow": "a webhook did not answer within the 10 s limit (webhook_timeout_s)",
    "webhook_unreachable": "a webhook could not be reached (connection refused, reset …)",
    "bad_signature_response": "the app answered 401/403 to a correctly signed request",
    "accepted_bad_signature": "the app answered 2xx to a deliberately mis-signed request (directory bad_signature)",
    "no_voice_url": "an answered call had neither voice_callback_url nor the number's routing_url",
    # documents (§2, §4)
    "unparseable_document": "the answer is neither a <Response> XML document nor JSON actions",
    "invalid_json_actions": "JSON actions failed validation (unknown verb, missing field, > 50 actions …)",
    "unknown_verb": "an XML element the switch does not know was skipped",
    "stream_inside_connect": "<Stream> nested in <Connect> (it must sit at the top level); skipped",
    "second_stream": "a <Stream> in the answer to a lifecycle re-invocation (§7.2)",
    "reinvocation_not_empty": "verbs other than Stream in the answer to a lifecycle re-invocation",
    "bad_redirect": "<Redirect> to something that is not an http(s) URL",
    "dial_invalid": "<Dial> without a number",
    "dial_target_unsupported": "a <Dial> target that is not an E.164 number (sip/client are not simulated)",
    "play_failed": "<Play> audio could not be fetched or is not 16-bit PCM WAV",
    # the stream (§4, §5)
    "stream_missing_connect": 'Stream without connect="true": the leg drops in ~1 s, socket 1006 (§7.1)',
    "bad_stream_url": "<Stream url> is not ws:// or wss://",
    "bad_stream_track": "track is not inbound_track, outbound_track or both_tracks",
    "bad_sampling_rate": "outputSamplingRate not 8000/16000, or bidirectionalSamplingRate out of range",
    "bidirectional_rate_missing": "no bidirectionalSamplingRate: playback undefined (the switch assumes 8000)",
    "header_metadata_invalid": "headerMetadata is not a flat JSON object serialised as a string",
    "stream_connect_failed": "the WebSocket could not be opened (refused, HTTP error, timeout)",
    "missing_subprotocol": "the WebSocket server did not select audio.drachtio.org; refused",
    "bad_text_frame": "a text frame from the app that is not JSON",
}
