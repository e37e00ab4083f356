"""Pure models, no database: BG/NBD and Gamma-Gamma maximum-likelihood fits
(``clv_models``), checked against the lifetimes package's fits."""
