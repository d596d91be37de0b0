"""The store: the engine, the tables and their migrations, and the lifecycle of an enquiry."""
