"""Generation: one SamplingParams, one request builder, engines behind submit/stream/cancel/run."""
