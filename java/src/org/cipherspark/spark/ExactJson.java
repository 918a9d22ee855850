package org.cipherspark.spark;

import com.fasterxml.jackson.core.JsonFactory;
import com.fasterxml.jackson.core.JsonParser;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.Iterator;
import java.util.List;
import java.util.Map;
import org.apache.spark.sql.Dataset;
import org.apache.spark.sql.Row;
import org.apache.spark.sql.SparkSession;
import org.apache.spark.sql.catalyst.InternalRow;
import org.apache.spark.sql.catalyst.expressions.ExprUtils;
import org.apache.spark.sql.catalyst.json.JSONOptions;
import org.apache.spark.sql.catalyst.json.JacksonParser;
import org.apache.spark.sql.catalyst.util.FailureSafeParser;
import org.apache.spark.sql.internal.SQLConf;
import org.apache.spark.sql.sources.Filter;
import org.apache.spark.sql.types.StructField;
import org.apache.spark.sql.types.StructType;
import org.apache.spark.unsafe.types.UTF8String;
import scala.collection.Iterable;
import scala.jdk.javaapi.CollectionConverters;
import scala.runtime.AbstractFunction1;
import scala.runtime.AbstractFunction2;

/**
 * Spark's JSON Lines parsing of decrypted lines, exactly as Spark's JSON <em>file</em> reader
 * parses them.
 *
 * <p>Why this class exists (the one JVM piece besides Parquet's KMS client and the plaintext-write
 * guard): a Python data source can only hand Spark its lines as strings, and Spark's public
 * {@code DataFrameReader.json(Dataset[String])} builds Jackson parsers over a {@code String}
 * ({@code CreateJacksonParser.string}). Spark's {@code JacksonParser} keeps the exact source text
 * of a non-string value read into a string column only when the parser's raw content is a byte
 * array, as the file reader's is ({@code CreateJacksonParser.text}, SPARK-48148,
 * {@code spark.sql.json.enableExactStringParsing}). Over a {@code String} it re-serialises the
 * value instead, through a double for numbers: {@code 12.50} read as a string becomes
 * {@code "12.5"} and a 40-digit number loses 24 digits (measured, PySpark 4.3). So encrypted JSON
 * read through the public method would answer differently from {@code spark.read.json} on the
 * plaintext. This method is that public method with the file reader's parser factory: the same
 * {@code JacksonParser}, {@code FailureSafeParser} and options, each line's UTF-8 bytes as the
 * parser's input.
 *
 * <p>It uses Spark's internal classes (stable across 4.x so far); the differential suite
 * (tests/spark/test_text_json.py) compares every read with {@code spark.read.json} on the
 * plaintext, so a change in them fails there.
 */
public final class ExactJson {
  private ExactJson() {}

  /**
   * Parse {@code lines} (a first column of JSON text, one document per row) under {@code schema}
   * with Spark's JSON {@code options}, as {@code spark.read.options(options).schema(schema).json}
   * parses a file holding those lines.
   */
  public static Dataset<Row> parse(
      SparkSession session, Dataset<Row> lines, Map<String, String> options, StructType schema) {
    org.apache.spark.sql.classic.SparkSession spark =
        (org.apache.spark.sql.classic.SparkSession) session;
    SQLConf conf = spark.sessionState().conf();
    JSONOptions parsed =
        new JSONOptions(
            scala.collection.immutable.Map$.MODULE$.from(CollectionConverters.asScala(options)),
            conf.sessionLocalTimeZone(),
            conf.columnNameOfCorruptRecord());
    // As DataFrameReader.json: a given schema is read as nullable (files read so too).
    StructType nullable = schema.asNullable();
    ExprUtils.verifyColumnNameOfCorruptRecord(nullable, parsed.columnNameOfCorruptRecord());
    List<StructField> data = new ArrayList<>();
    for (StructField field : nullable.fields()) {
      if (!field.name().equals(parsed.columnNameOfCorruptRecord())) {
        data.add(field);
      }
    }
    StructType actual = new StructType(data.toArray(new StructField[0]));
    org.apache.spark.rdd.RDD<InternalRow> rows =
        lines.javaRDD().mapPartitions(new Parse(actual, nullable, parsed)).rdd();
    return spark.internalCreateDataFrame(rows, nullable, false);
  }

  /** The per-partition parse: one Jackson parser per partition, as Spark's readers keep one. */
  private static final class Parse
      implements org.apache.spark.api.java.function.FlatMapFunction<
          Iterator<Row>, InternalRow> {
    private static final long serialVersionUID = 1L;
    private final StructType actual;
    private final StructType schema;
    private final JSONOptions options;

    Parse(StructType actual, StructType schema, JSONOptions options) {
      this.actual = actual;
      this.schema = schema;
      this.options = options;
    }

    @Override
    public Iterator<InternalRow> call(Iterator<Row> rows) {
      JacksonParser raw =
          new JacksonParser(
              actual,
              options,
              true,
              CollectionConverters.asScala(new ArrayList<Filter>()).toList());
      FailureSafeParser<byte[]> parser =
          new FailureSafeParser<>(
              new AbstractFunction1<byte[], Iterable<InternalRow>>() {
                @Override
                public Iterable<InternalRow> apply(byte[] record) {
                  return raw.parse(record, BYTES, LITERAL);
                }
              },
              options.parseMode(),
              schema,
              options.columnNameOfCorruptRecord());
      return new Iterator<InternalRow>() {
        private scala.collection.Iterator<InternalRow> current =
            scala.collection.Iterator$.MODULE$.empty();

        @Override
        public boolean hasNext() {
          while (!current.hasNext()) {
            if (!rows.hasNext()) {
              return false;
            }
            current =
                parser.parse(rows.next().getString(0).getBytes(StandardCharsets.UTF_8));
          }
          return true;
        }

        @Override
        public InternalRow next() {
          if (!hasNext()) {
            throw new java.util.NoSuchElementException();
          }
          return current.next();
        }
      };
    }
  }

  // CreateJacksonParser.text's overload: a byte-array raw content, so exact string parsing.
  private static final AbstractFunction2<JsonFactory, byte[], JsonParser> BYTES =
      new Bytes();

  private static final AbstractFunction1<byte[], UTF8String> LITERAL = new Literal();

  private static final class Bytes extends AbstractFunction2<JsonFactory, byte[], JsonParser>
      implements java.io.Serializable {
    private static final long serialVersionUID = 1L;

    @Override
    public JsonParser apply(JsonFactory factory, byte[] record) {
      try {
        return factory.createParser(record, 0, record.length);
      } catch (java.io.IOException exc) {
        // Rethrown as it is, as Scala's CreateJacksonParser.text lets it out: JacksonParser.parse
        // handles a CharConversionException (an undetectable encoding) apart from others.
        throw ExactJson.<RuntimeException>rethrow(exc);
      }
    }
  }

  @SuppressWarnings("unchecked")
  private static <E extends Throwable> E rethrow(Throwable exc) throws E {
    throw (E) exc;
  }

  private static final class Literal extends AbstractFunction1<byte[], UTF8String>
      implements java.io.Serializable {
    private static final long serialVersionUID = 1L;

    @Override
    public UTF8String apply(byte[] record) {
      return UTF8String.fromBytes(record);
    }
  }
}
