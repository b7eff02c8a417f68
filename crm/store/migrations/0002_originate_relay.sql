-- Click-to-call across instances sharing one store: which PBX owns which extensions, and
-- requests queued for the instance beside another PBX (docs/originate-relay.md).

-- Each instance replaces its own rows at start from `[pbx] extensions`.
CREATE TABLE pbx_extensions (
    pbx_id          TEXT NOT NULL,
    extension_range TEXT NOT NULL,  -- "7000-7999" or one extension "101"
    PRIMARY KEY (pbx_id, extension_range)
);

-- NULL: sent by the instance that took the request (the only kind before this migration).
ALTER TABLE originates ADD COLUMN target_pbx_id TEXT;
-- The relay poll of every instance reads only the few rows still queued for it.
CREATE INDEX originates_queued ON originates(target_pbx_id, created_at) WHERE state = 'queued';
-- "Learned from the events": the PBX of the latest call an extension took part in.
CREATE INDEX calls_agent ON calls(agent_extension, start_epoch);
