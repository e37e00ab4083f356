-- Since schema 12 the duplicate window follows each Kafka partition's own newest
-- event, and that of all files loaded (a replay reads partitions at their own pace,
-- and one partition far ahead in event time must not push another's recent ids out
-- of the window). recent_event_ids was pruned by the newest event of all sources: it
-- is refilled, per partition, by the first write after this migration. covered_from
-- now marks where the window of all sources began at the last refill or prune (a
-- wider window than that refills again), no longer what recent_event_ids holds.
UPDATE duplicate_window SET covered_from = NULL;
-- How many ids the last refill or prune left: a partition replayed behind another
-- does not move the newest event of all partitions, so pruning is also due when the
-- ids held have doubled since.
ALTER TABLE duplicate_window ADD COLUMN held_after_prune BIGINT;

COMMENT ON TABLE recent_event_ids IS 'Internal: ids of stored events within the duplicate window of the newest event of their partition, for ingest''s duplicate check.';
COMMENT ON TABLE duplicate_window IS 'Internal: the newest event time stored, where the window of all sources began when recent_event_ids was last refilled or pruned, and how many ids that left (held_after_prune).';
COMMENT ON COLUMN duplicate_window.held_after_prune IS 'Ids left in recent_event_ids by the last refill or prune: pruning is also due once they have doubled.';
COMMENT ON COLUMN events.event_id IS 'The store''s idempotency key (Segment messageId). A copy received while the original is within ingest.duplicate_window of the newest event time of its Kafka partition (of any file, for cdp load) is not stored again (see duplicate_events); builds count an older copy once.';
