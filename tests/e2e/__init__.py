"""Acceptance suite: the Vercel Workflow DevKit e2e scenarios, ported, against in-process and subprocess workers."""
