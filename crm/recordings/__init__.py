"""Call recordings as files a CRM can play: conversion, the served name, retention.

`settings` is the `[recordings]` section; `audio` reads MixMonitor files and encodes MP3;
`library` converts finished recordings off the event loop and answers "where is the file
this link names"; `retention` deletes old files, never one a pending delivery still needs.
"""
