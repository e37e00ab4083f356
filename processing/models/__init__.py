"""Pure models, no database: BG/NBD, MBG/NBD, Pareto/NBD and Gamma-Gamma
maximum-likelihood fits (one module each; ``clv_models`` names them for the build),
checked against the lifetimes package's fits."""
