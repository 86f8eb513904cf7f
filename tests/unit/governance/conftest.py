"""OpenLineage events as the spec's examples, the Airflow provider and the Spark integration send them."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from runink.store import _annotations, _lineage

# The spec's "Example Lineage Events" (openlineage.io/docs/spec/examples): no schemaURL, no facets.
SPEC_START = {
    "eventType": "START",
    "eventTime": "2020-12-28T19:52:00.001+10:00",
    "run": {"runId": "d46e465b-d358-4d32-83d4-df660ff614dd"},
    "job": {"namespace": "workshop", "name": "process_taxes"},
    "inputs": [{"namespace": "postgres://workshop-db:None", "name": "workshop.public.taxes"}],
    "producer": "https://github.com/OpenLineage/OpenLineage/blob/v1-0-0/client",
}
SPEC_COMPLETE = {
    "eventType": "COMPLETE",
    "eventTime": "2020-12-28T20:52:00.001+10:00",
    "run": {"runId": "d46e465b-d358-4d32-83d4-df660ff614dd"},
    "job": {"namespace": "workshop", "name": "process_taxes"},
    "outputs": [
        {
            "namespace": "postgres://workshop-db:None",
            "name": "workshop.public.unpaid_taxes",
            "facets": {
                "schema": {
                    "_producer": "https://github.com/OpenLineage/OpenLineage/blob/v1-0-0/client",
                    "_schemaURL": "https://openlineage.io/spec/facets/1-0-0/SchemaDatasetFacet.json",
                    "fields": [
                        {"name": "id", "type": "INTEGER"},
                        {"name": "amount", "type": "DECIMAL"},
                    ],
                }
            },
        }
    ],
    "producer": "https://github.com/OpenLineage/OpenLineage/blob/v1-0-0/client",
}
# The spec document's full RunEvent example (OpenLineage.md), with facets on everything.
SPEC_FULL = {
    "eventType": "START",
    "eventTime": "2020-12-09T23:37:31.081Z",
    "run": {
        "runId": "3b452093-782c-4ef2-9c0c-aafe2aa6f34d",
        "facets": {
            "nominalTime": {
                "_producer": "https://github.com/OpenLineage/OpenLineage/blob/v1-0-0/client",
                "_schemaURL": "https://openlineage.io/spec/facets/1-0-0/NominalTimeRunFacet.json",
                "nominalStartTime": "2020-12-10T00:00:00Z",
            }
        },
    },
    "job": {
        "namespace": "my-scheduler-namespace",
        "name": "myjob.mytask",
        "facets": {
            "sql": {
                "_producer": "https://github.com/OpenLineage/OpenLineage/blob/v1-0-0/client",
                "_schemaURL": "https://openlineage.io/spec/facets/1-0-0/SQLJobFacet.json",
                "query": "INSERT INTO output SELECT * FROM input",
            }
        },
    },
    "inputs": [
        {
            "namespace": "my-datasource-namespace",
            "name": "instance.schema.table",
            "facets": {
                "schema": {
                    "_producer": "https://github.com/OpenLineage/OpenLineage/blob/v1-0-0/client",
                    "_schemaURL": "https://openlineage.io/spec/facets/1-0-0/SchemaDatasetFacet.json",
                    "fields": [{"name": "a", "type": "VARCHAR"}, {"name": "b", "type": "INT"}],
                }
            },
        }
    ],
    "outputs": [{"namespace": "my-datasource-namespace", "name": "instance.schema.output"}],
    "producer": "https://github.com/OpenLineage/OpenLineage/blob/v1-0-0/client",
    "schemaURL": "https://openlineage.io/spec/2-0-2/OpenLineage.json#/$defs/RunEvent",
}
# Shaped like apache-airflow-providers-openlineage: dag.task job, parent = the DAG run, custom
# run facets (airflow, processing_engine), jobType, dataQualityAssertions on an input.
AIRFLOW_COMPLETE = {
    "eventTime": "2024-05-01T10:00:05.123456+00:00",
    "eventType": "COMPLETE",
    "producer": "https://github.com/apache/airflow/tree/providers-openlineage/1.7.0",
    "schemaURL": "https://openlineage.io/spec/2-0-2/OpenLineage.json#/$defs/RunEvent",
    "run": {
        "runId": "018f3a4e-7c6b-7d2e-9f00-0123456789ab",
        "facets": {
            "parent": {
                "_producer": "https://github.com/apache/airflow/tree/providers-openlineage/1.7.0",
                "_schemaURL": "https://openlineage.io/spec/facets/1-0-0/ParentRunFacet.json",
                "job": {"name": "etl_orders", "namespace": "default"},
                "run": {"runId": "018f3a4e-0000-7000-8000-000000000001"},
            },
            "airflow": {
                "_producer": "https://github.com/apache/airflow/tree/providers-openlineage/1.7.0",
                "_schemaURL": "https://raw.githubusercontent.com/apache/airflow/providers-openlineage/1.7.0/airflow/providers/openlineage/facets/AirflowRunFacet.json",
                "dag": {"dag_id": "etl_orders", "schedule_interval": "@daily"},
                "task": {"task_id": "load", "operator_class": "PostgresOperator"},
            },
            "processing_engine": {
                "_producer": "https://github.com/apache/airflow/tree/providers-openlineage/1.7.0",
                "_schemaURL": "https://openlineage.io/spec/facets/1-1-1/ProcessingEngineRunFacet.json",
                "name": "Airflow",
                "version": "2.9.0",
                "openlineageAdapterVersion": "1.7.0",
            },
        },
    },
    "job": {
        "namespace": "default",
        "name": "etl_orders.load",
        "facets": {
            "jobType": {
                "_producer": "https://github.com/apache/airflow/tree/providers-openlineage/1.7.0",
                "_schemaURL": "https://openlineage.io/spec/facets/2-0-2/JobTypeJobFacet.json",
                "integration": "AIRFLOW",
                "jobType": "TASK",
                "processingType": "BATCH",
            }
        },
    },
    "inputs": [
        {
            "namespace": "postgres://db:5432",
            "name": "shop.public.raw_orders",
            "facets": {},
            "inputFacets": {
                "dataQualityAssertions": {
                    "_producer": "https://github.com/apache/airflow/tree/providers-openlineage/1.7.0",
                    "_schemaURL": "https://openlineage.io/spec/facets/1-0-1/DataQualityAssertionsDatasetFacet.json",
                    "assertions": [{"assertion": "not_null", "success": True, "column": "id"}],
                }
            },
        }
    ],
    "outputs": [
        {
            "namespace": "postgres://db:5432",
            "name": "shop.public.orders",
            "facets": {
                "schema": {
                    "_producer": "https://github.com/apache/airflow/tree/providers-openlineage/1.7.0",
                    "_schemaURL": "https://openlineage.io/spec/facets/1-1-1/SchemaDatasetFacet.json",
                    "fields": [
                        {"name": "id", "type": "integer"},
                        {"name": "total", "type": "numeric"},
                    ],
                },
                "columnLineage": {
                    "_producer": "https://github.com/apache/airflow/tree/providers-openlineage/1.7.0",
                    "_schemaURL": "https://openlineage.io/spec/facets/1-2-0/ColumnLineageDatasetFacet.json",
                    "fields": {
                        "total": {
                            "inputFields": [
                                {
                                    "namespace": "postgres://db:5432",
                                    "name": "shop.public.raw_orders",
                                    "field": "amount",
                                    "transformations": [
                                        {
                                            "type": "DIRECT",
                                            "subtype": "AGGREGATION",
                                            "masking": False,
                                        }
                                    ],
                                }
                            ]
                        }
                    },
                },
            },
            "outputFacets": {
                "outputStatistics": {
                    "_producer": "https://github.com/apache/airflow/tree/providers-openlineage/1.7.0",
                    "_schemaURL": "https://openlineage.io/spec/facets/1-0-2/OutputStatisticsOutputDatasetFacet.json",
                    "rowCount": 10,
                }
            },
        }
    ],
}
# Shaped like the Spark integration: application-named job, RUNNING events, s3/hdfs datasets with
# symlinks and dataSource facets, spark-specific run facets.
SPARK_RUNNING = {
    "eventTime": "2024-05-01T11:00:01.5Z",
    "producer": "https://github.com/OpenLineage/OpenLineage/tree/1.12.0/integration/spark",
    "schemaURL": "https://openlineage.io/spec/2-0-2/OpenLineage.json#/$defs/RunEvent",
    "eventType": "RUNNING",
    "run": {
        "runId": "0190a4c8-1111-7222-8333-444455556666",
        "facets": {
            "spark_version": {
                "_producer": "https://github.com/OpenLineage/OpenLineage/tree/1.12.0/integration/spark",
                "_schemaURL": "https://openlineage.io/spec/2-0-2/OpenLineage.json#/$defs/RunFacet",
                "spark-version": "3.5.1",
            },
            "spark.logicalPlan": {
                "_producer": "https://github.com/OpenLineage/OpenLineage/tree/1.12.0/integration/spark",
                "_schemaURL": "https://openlineage.io/spec/2-0-2/OpenLineage.json#/$defs/RunFacet",
                "plan": [
                    {
                        "class": "org.apache.spark.sql.execution.datasources.InsertIntoHadoopFsRelationCommand"
                    }
                ],
            },
        },
    },
    "job": {
        "namespace": "spark-prod",
        "name": "orders_rollup.execute_insert_into_hadoop_fs_relation_command.warehouse_daily",
        "facets": {},
    },
    "inputs": [
        {
            "namespace": "s3://lake",
            "name": "warehouse/orders",
            "facets": {
                "dataSource": {
                    "_producer": "https://github.com/OpenLineage/OpenLineage/tree/1.12.0/integration/spark",
                    "_schemaURL": "https://openlineage.io/spec/facets/1-0-0/DatasourceDatasetFacet.json",
                    "name": "s3://lake",
                    "uri": "s3://lake",
                },
                "symlinks": {
                    "_producer": "https://github.com/OpenLineage/OpenLineage/tree/1.12.0/integration/spark",
                    "_schemaURL": "https://openlineage.io/spec/facets/1-0-0/SymlinksDatasetFacet.json",
                    "identifiers": [
                        {
                            "namespace": "hive://metastore:9083",
                            "name": "warehouse.orders",
                            "type": "TABLE",
                        }
                    ],
                },
            },
            "inputFacets": {},
        }
    ],
    "outputs": [
        {
            "namespace": "s3://lake",
            "name": "warehouse/daily",
            "facets": {
                "schema": {
                    "_producer": "https://github.com/OpenLineage/OpenLineage/tree/1.12.0/integration/spark",
                    "_schemaURL": "https://openlineage.io/spec/facets/1-1-1/SchemaDatasetFacet.json",
                    "fields": [
                        {"name": "day", "type": "date"},
                        {"name": "revenue", "type": "double"},
                    ],
                }
            },
            "outputFacets": {},
        }
    ],
}


@pytest.fixture
def examples() -> dict[str, dict[str, Any]]:
    return copy.deepcopy(
        {
            "spec_start": SPEC_START,
            "spec_complete": SPEC_COMPLETE,
            "spec_full": SPEC_FULL,
            "airflow": AIRFLOW_COMPLETE,
            "spark": SPARK_RUNNING,
        }
    )


@pytest.fixture
def lineage_store(tmp_path: Path):  # type: ignore[no-untyped-def]
    s = _lineage.open_lineage_store(tmp_path / "lineage", sync=False)
    try:
        yield s
    finally:
        s.close()


@pytest.fixture
def annotation_store(tmp_path: Path):  # type: ignore[no-untyped-def]
    s = _annotations.open_annotation_store(tmp_path / "annotations", sync=False)
    try:
        yield s
    finally:
        s.close()
