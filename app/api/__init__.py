"""HTTP routes: they translate OpenAI requests and delegate to the engine."""
