"""The method: spans, teachers, per-token divergences, the chunked loss, and scoring."""
