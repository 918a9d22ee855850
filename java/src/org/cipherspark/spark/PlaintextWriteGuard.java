/*
 * Licensed under the Apache License, Version 2.0 (see LICENSE at the repository root).
 */
package org.cipherspark.spark;

import java.util.Locale;
import java.util.Set;
import org.apache.spark.sql.SparkSession;
import org.apache.spark.sql.catalyst.analysis.NamedRelation;
import org.apache.spark.sql.catalyst.plans.logical.LogicalPlan;
import org.apache.spark.sql.catalyst.plans.logical.V2WriteCommand;
import org.apache.spark.sql.connector.catalog.Table;
import org.apache.spark.sql.execution.command.CreateDataSourceTableAsSelectCommand;
import org.apache.spark.sql.execution.command.InsertIntoDataSourceDirCommand;
import org.apache.spark.sql.execution.datasources.InsertIntoDataSourceCommand;
import org.apache.spark.sql.execution.datasources.InsertIntoHadoopFsRelationCommand;
import org.apache.spark.sql.execution.datasources.SaveIntoDataSourceCommand;
import org.apache.spark.sql.execution.datasources.parquet.ParquetFileFormat;
import org.apache.spark.sql.execution.datasources.v2.DataSourceV2Relation;
import org.apache.spark.sql.execution.datasources.v2.FileTable;
import org.apache.spark.sql.execution.datasources.v2.parquet.ParquetTable;
import scala.runtime.AbstractFunction1;
import scala.runtime.BoxedUnit;

/**
 * A check rule ({@code spark.sql.extensions}) that refuses the writes of a secure session that
 * Spark would make in plaintext: its own CSV, JSON, ORC and text files (and any other file
 * format but Parquet, which the session encrypts with Parquet Modular Encryption), whatever the
 * API: {@code df.write.csv(...)}, {@code df.write.format("json").save(...)}, {@code
 * saveAsTable}, SQL {@code INSERT INTO} a CSV table, {@code INSERT OVERWRITE DIRECTORY ... USING
 * csv}, {@code CREATE TABLE ... USING orc AS SELECT}, the file sources' DataSource V2 path, V1
 * relation providers (JDBC and the like) and Hive tables.
 *
 * <p>It inspects the analysed plan, before anything runs: a refused write creates nothing. Why
 * a JVM class: Spark loads session extensions (and so check rules) only as JVM classes named by
 * {@code spark.sql.extensions}; PySpark has no hook on the analysed plan of SQL statements.
 *
 * <p>The opt-out is explicit and named: the SQL setting {@code
 * spark.cipherspark.unsafePlaintextWrites=true} ({@code secure_session(unsafe_plaintext_writes=
 * True)}, {@code cipherspark run --unsafe-plaintext-output}). The refusal carries {@code
 * cipherspark.errors.UsageError: message}, which {@code cipherspark.spark._errors} turns into
 * the one-line error. Not covered: the RDD API ({@code rdd.saveAsTextFile}), which never passes
 * through the analyser, and the application's own Python file writes.
 */
public final class PlaintextWriteGuard
    extends AbstractFunction1<org.apache.spark.sql.SparkSessionExtensions, BoxedUnit> {

  /** The SQL setting that allows plaintext writes in this session. */
  public static final String UNSAFE_PLAINTEXT_WRITES = "spark.cipherspark.unsafePlaintextWrites";

  // Hive's write commands, by name: the class is in spark-hive, which a session may not load.
  private static final Set<String> HIVE_WRITES =
      Set.of(
          "InsertIntoHiveTable",
          "InsertIntoHiveDirCommand",
          "CreateHiveTableAsSelectCommand",
          "OptimizedCreateHiveTableAsSelectCommand");

  @Override
  public BoxedUnit apply(org.apache.spark.sql.SparkSessionExtensions extensions) {
    extensions.injectCheckRule(new Builder());
    return BoxedUnit.UNIT;
  }

  private static final class Builder
      extends AbstractFunction1<SparkSession, scala.Function1<LogicalPlan, BoxedUnit>> {
    @Override
    public scala.Function1<LogicalPlan, BoxedUnit> apply(SparkSession session) {
      return new Check(session);
    }
  }

  private static final class Check extends AbstractFunction1<LogicalPlan, BoxedUnit> {
    private final SparkSession session;

    Check(SparkSession session) {
      this.session = session;
    }

    @Override
    public BoxedUnit apply(LogicalPlan plan) {
      if ("true".equalsIgnoreCase(session.conf().get(UNSAFE_PLAINTEXT_WRITES, "false").trim())) {
        return BoxedUnit.UNIT;
      }
      check(plan);
      return BoxedUnit.UNIT;
    }
  }

  static void check(LogicalPlan plan) {
    String refused = plaintextWrite(plan);
    if (refused != null) {
      throw new SecurityException(
          "cipherspark.errors.UsageError: this secure session refuses to write "
              + refused
              + " in plaintext: write Parquet (encrypted) or the encrypted CSV source "
              + "(cipherspark_csv), or open the session with the explicit opt-out "
              + "(unsafe_plaintext_writes=True, cipherspark run --unsafe-plaintext-output)");
    }
    scala.collection.Iterator<LogicalPlan> children = plan.children().iterator();
    while (children.hasNext()) {
      check(children.next());
    }
  }

  /** What {@code plan} would write in plaintext, or null. */
  static String plaintextWrite(LogicalPlan plan) {
    if (plan instanceof InsertIntoHadoopFsRelationCommand) {
      Object format = ((InsertIntoHadoopFsRelationCommand) plan).fileFormat();
      return format instanceof ParquetFileFormat ? null : "files of format " + format;
    }
    if (plan instanceof InsertIntoDataSourceDirCommand) {
      String provider = ((InsertIntoDataSourceDirCommand) plan).provider();
      return isParquet(provider) ? null : "a directory of format " + provider;
    }
    if (plan instanceof CreateDataSourceTableAsSelectCommand) {
      scala.Option<String> provider =
          ((CreateDataSourceTableAsSelectCommand) plan).table().provider();
      String name = provider.isDefined() ? provider.get() : "(default)";
      return provider.isDefined() && isParquet(name) ? null : "a table of format " + name;
    }
    if (plan instanceof V2WriteCommand) {
      NamedRelation relation = ((V2WriteCommand) plan).table();
      if (relation instanceof DataSourceV2Relation) {
        Table table = ((DataSourceV2Relation) relation).table();
        if (table instanceof FileTable && !(table instanceof ParquetTable)) {
          return "files of format " + ((FileTable) table).formatName();
        }
      }
      return null; // other V2 tables: Python data sources (cipherspark_csv encrypts), catalogs
    }
    if (plan instanceof SaveIntoDataSourceCommand) {
      return "to " + ((SaveIntoDataSourceCommand) plan).dataSource().getClass().getName();
    }
    if (plan instanceof InsertIntoDataSourceCommand) {
      // The class, not the relation: a JDBC relation's text may hold its URL's password.
      Object relation = ((InsertIntoDataSourceCommand) plan).logicalRelation().relation();
      return "to " + relation.getClass().getName();
    }
    if (HIVE_WRITES.contains(plan.getClass().getSimpleName())) {
      return "a Hive table";
    }
    return null;
  }

  private static boolean isParquet(String provider) {
    String name = provider.toLowerCase(Locale.ROOT);
    return name.equals("parquet")
        || name.equals("org.apache.spark.sql.execution.datasources.parquet.parquetfileformat")
        || name.equals("org.apache.spark.sql.parquet");
  }
}
