"""Example jobs over encrypted data: the reference Simple Query, ad-hoc SQL, and the demo."""

from cipherspark.jobs.simple_query import PEOPLE_SCHEMA, SimpleQueryResult, simple_query
from cipherspark.jobs.sql import SqlResult, run_sql

__all__ = ["PEOPLE_SCHEMA", "SimpleQueryResult", "SqlResult", "run_sql", "simple_query"]
