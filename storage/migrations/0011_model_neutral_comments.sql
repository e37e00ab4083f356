-- Since schema 9 a build predicts with the purchase model its backtest chose
-- (clv.model: BG/NBD, MBG/NBD or Pareto/NBD), so the columns no longer name BG/NBD.
COMMENT ON COLUMN customer_profiles.predicted_clv IS 'Expected purchases (the purchase model chosen by the build, see clv_model_runs) x Gamma-Gamma spend over clv.horizon_months, discounted.';
COMMENT ON COLUMN customer_profiles.p_alive IS 'Probability the customer is still active, from the purchase model chosen by the build (see clv_model_runs).';
COMMENT ON COLUMN customer_profiles.expected_purchases IS 'Expected purchases over the horizon, from the purchase model chosen by the build (see clv_model_runs).';
