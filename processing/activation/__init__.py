"""Getting segments out, and customers forgotten: ``export`` (snapshot + diff per
destination, as of a build), ``destinations`` (files, ad audiences, Kafka, webhooks)
and ``privacy`` (forget a customer everywhere, and suppress their identifiers)."""
