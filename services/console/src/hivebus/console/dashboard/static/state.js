// What every view shares: the server's /api/config, read once when the page starts.

export const app = { config: { trace_url: null, token_required: false, decisions_allowed: true } };
