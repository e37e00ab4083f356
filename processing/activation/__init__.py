"""Getting segments out, and customers forgotten: ``export`` (snapshot + diff per
destination, as of a build), ``destinations`` (a package, one module per type: files,
ad audiences, Kafka, webhooks) and ``privacy`` (forget a customer everywhere, and
suppress their identifiers)."""
