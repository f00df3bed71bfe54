"""Media: G.711 codec; the RTP endpoint and its port pool come with live audio."""
