-- Since schema 12 the duplicate window follows each partition's own newest event (a
-- replay reads partitions at their own pace, and one partition far ahead in event
-- time must not push another's recent ids out of the window). recent_event_ids was
-- pruned by the newest event of all partitions: it is refilled, per partition, by
-- the first write after this migration.
UPDATE duplicate_window SET covered_from = NULL;
-- How many ids the last refill or prune left: a partition replayed behind another
-- does not move the newest event of all partitions, so pruning is also due when the
-- ids held have doubled since.
ALTER TABLE duplicate_window ADD COLUMN held_after_prune BIGINT;

COMMENT ON TABLE recent_event_ids IS 'Internal: ids of stored events within the duplicate window of the newest event of their partition, for ingest''s duplicate check.';
COMMENT ON TABLE duplicate_window IS 'Internal: the newest event time stored, and where the window of all partitions began when recent_event_ids was last refilled or pruned.';
COMMENT ON COLUMN events.event_id IS 'The store''s idempotency key (Segment messageId). A copy received while the original is within ingest.duplicate_window of the newest event time of its partition is not stored again (see duplicate_events); builds count an older copy once.';
