-- Predicted CLV gets a backtest at every build and a choice among three purchase-count
-- models (BG/NBD, MBG/NBD, Pareto/NBD). clv_backtests holds, per build date and
-- model, how well a fit on the orders before a calibration end forecast what
-- customers did after it; clv_model_runs gains Pareto/NBD's s and beta and the
-- model choice. Like the other dated tables, no key: a build deletes its as-of's
-- rows before inserting them.

CREATE TABLE clv_backtests (
    as_of                    DATE NOT NULL,
    model                    VARCHAR NOT NULL,
    calibration_end          DATE,
    holdout_days             INTEGER,
    holdout_shortened        BOOLEAN,
    customers                BIGINT,
    forecast_purchases       DOUBLE,
    actual_purchases         BIGINT,
    ratio                    DOUBLE,
    mae                      DOUBLE,
    rmse                     DOUBLE,
    calibration              STRUCT(repeat_purchases VARCHAR, customers BIGINT,
                                    mean_forecast DOUBLE, mean_actual DOUBLE)[],
    forecast_mean_spend      DOUBLE,
    actual_mean_spend        DOUBLE,
    top_decile_revenue_share DOUBLE,
    converged                BOOLEAN,
    chosen                   BOOLEAN,
    message                  VARCHAR,
    created_at               TIMESTAMPTZ NOT NULL DEFAULT current_timestamp
);

COMMENT ON TABLE clv_backtests IS 'How good predicted CLV is: per build date and purchase-count model, a fit on the orders up to calibration_end against what customers did in the holdout after it.';
COMMENT ON COLUMN clv_backtests.as_of IS 'Build date (the holdout ends here).';
COMMENT ON COLUMN clv_backtests.model IS 'bgnbd | mbgnbd | pareto_nbd.';
COMMENT ON COLUMN clv_backtests.calibration_end IS 'Last day of the orders the model was fitted on (as_of - holdout_days).';
COMMENT ON COLUMN clv_backtests.holdout_days IS 'Days forecast and compared, after calibration_end.';
COMMENT ON COLUMN clv_backtests.holdout_shortened IS 'True when the store''s history was too short for the configured holdout (the horizon), so a shorter one was used; see message.';
COMMENT ON COLUMN clv_backtests.customers IS 'Customers with an order by calibration_end (customers new in the holdout are not forecast).';
COMMENT ON COLUMN clv_backtests.forecast_purchases IS 'Repeat purchase-days the model expected in the holdout, summed over customers (several orders on one day are one purchase).';
COMMENT ON COLUMN clv_backtests.actual_purchases IS 'Purchase-days those customers actually had in the holdout.';
COMMENT ON COLUMN clv_backtests.ratio IS 'forecast_purchases / actual_purchases: 1 is right for the cohort, below 1 under-forecasts.';
COMMENT ON COLUMN clv_backtests.mae IS 'Mean absolute error of each customer''s forecast purchases (the auto model choice minimises it).';
COMMENT ON COLUMN clv_backtests.rmse IS 'Root mean squared error of each customer''s forecast purchases.';
COMMENT ON COLUMN clv_backtests.calibration IS 'Per number of repeat purchases before calibration_end (0, 1, ..., 7+): customers, mean forecast and mean actual holdout purchases.';
COMMENT ON COLUMN clv_backtests.forecast_mean_spend IS 'Gamma-Gamma''s expected spend per purchase, averaged over the holdout''s purchases.';
COMMENT ON COLUMN clv_backtests.actual_mean_spend IS 'Actual net spend per holdout purchase-day.';
COMMENT ON COLUMN clv_backtests.top_decile_revenue_share IS 'Share of the holdout revenue of these customers that the top 10% by forecast value (purchases x spend) brought.';
COMMENT ON COLUMN clv_backtests.converged IS 'Whether the model''s fit on the calibration orders converged (else its forecast is the fallback rate).';
COMMENT ON COLUMN clv_backtests.chosen IS 'Whether this build predicts with this model (clv.model, or the lowest mae under auto).';
COMMENT ON COLUMN clv_backtests.message IS 'Fit outcome, and why the holdout was shortened or the backtest could not run.';
COMMENT ON COLUMN clv_backtests.created_at IS 'When the backtest ran.';

ALTER TABLE clv_model_runs ADD COLUMN s DOUBLE;
ALTER TABLE clv_model_runs ADD COLUMN beta DOUBLE;
ALTER TABLE clv_model_runs ADD COLUMN chosen BOOLEAN;
ALTER TABLE clv_model_runs ADD COLUMN choice VARCHAR;
COMMENT ON COLUMN clv_model_runs.model IS 'bgnbd | mbgnbd | pareto_nbd (purchase counts) | gamma_gamma (spend per order).';
COMMENT ON COLUMN clv_model_runs.r IS 'r: shape of the purchase rate''s gamma distribution (BG/NBD, MBG/NBD, Pareto/NBD).';
COMMENT ON COLUMN clv_model_runs.alpha IS 'alpha: scale of the purchase rate, in weeks (BG/NBD, MBG/NBD, Pareto/NBD).';
COMMENT ON COLUMN clv_model_runs.a IS 'a: drop-out probability''s beta distribution (BG/NBD, MBG/NBD).';
COMMENT ON COLUMN clv_model_runs.b IS 'b: drop-out probability''s beta distribution (BG/NBD, MBG/NBD).';
COMMENT ON COLUMN clv_model_runs.s IS 's: shape of the drop-out rate''s gamma distribution (Pareto/NBD).';
COMMENT ON COLUMN clv_model_runs.beta IS 'beta: scale of the drop-out rate, in weeks (Pareto/NBD).';
COMMENT ON COLUMN clv_model_runs.chosen IS 'Whether this build''s predictions use this model (Gamma-Gamma: always, when converged).';
COMMENT ON COLUMN clv_model_runs.choice IS 'Why the purchase-count model was chosen: clv.model, or the backtest''s errors under auto.';
