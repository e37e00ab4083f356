-- Builds and export runs say how they ended when their process was killed, and a
-- build says when its analyst database was not published; only the descriptions
-- analysts read in data_dictionary change.

COMMENT ON COLUMN builds.status IS 'running | succeeded | failed (nothing written) | publishing (profiles written, analyst database being written) | publish_failed (profiles written, analyst database or report not: see message) | interrupted (its process ended mid-build; nothing written).';
COMMENT ON COLUMN builds.finished_at IS 'End; for an interrupted build, when a later build noticed it.';
COMMENT ON COLUMN builds.message IS 'Merges, model outcomes, or the error; why the analyst database was not published.';
COMMENT ON COLUMN export_runs.status IS 'running | succeeded | failed | interrupted (its process ended mid-export; confirmed changes kept, the rest in the next diff).';
COMMENT ON COLUMN export_runs.finished_at IS 'End; for an interrupted run, when a later export noticed it.';
COMMENT ON COLUMN export_runs.message IS 'Error, when failed or interrupted.';
