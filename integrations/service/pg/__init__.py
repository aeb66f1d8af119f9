"""The service's state in PostgreSQL, for several replicas on one database: the queue
(:mod:`.queue`), the schema and its migrations (:mod:`.schema`), the embedding cache
(:mod:`.cache`), all through a psycopg 3 pool (:mod:`.connect`). Imported only when
``--store postgresql://...`` is given."""
