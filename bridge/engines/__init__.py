"""Realtime engines behind one interface (engines.base.Engine): Gemini Live, OpenAI Realtime, cascade."""
