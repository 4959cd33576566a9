"""The kernel (after the AIOS design): scheduler, context, memory, storage, tools, access,
and the LLM backends. It knows nothing of agent files; the runtime talks to it."""
