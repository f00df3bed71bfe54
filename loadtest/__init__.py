"""The load-test harness: router-only driver (simulated Asterisk), call mix, reports; SIPp scenarios."""
