/*
 * Licensed under the Apache License, Version 2.0 (see LICENSE at the repository root).
 */
package org.cipherspark.pme;

import java.io.BufferedReader;
import java.io.BufferedWriter;
import java.io.IOException;
import java.io.InputStreamReader;
import java.io.OutputStreamWriter;
import java.nio.charset.StandardCharsets;
import java.util.Base64;
import java.util.Map;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicLong;
import org.apache.hadoop.conf.Configuration;
import org.apache.parquet.crypto.KeyAccessDeniedException;
import org.apache.parquet.crypto.ParquetCryptoRuntimeException;
import org.apache.parquet.crypto.keytools.KmsClient;

/**
 * Parquet Modular Encryption's {@link KmsClient} for cipherspark.
 *
 * <p>Every wrap and unwrap is delegated to cipherspark's Python KMS code in a helper child
 * process of this JVM ({@code python -m cipherspark.spark._pme_helper}), one line per request
 * over the child's stdin and stdout. So the embedded {@code file://} keystore, the KMS server and
 * attested key release (nonce, evidence, policy, JWE) all work through the code that implements
 * them, the credentials stay in the environment (never in Spark's or Hadoop's configuration),
 * and nothing but the two pipes connects the JVM to the helper: no socket, so no other process
 * can ask it for keys.
 *
 * <p>Parquet caches key encryption keys (double wrapping, {@code
 * parquet.encryption.cache.lifetime.seconds}), so this client is called about once per master
 * key per JVM and cache lifetime, whatever the number of files and row groups.
 *
 * <p>Errors carry the cipherspark error's type and message as {@code
 * cipherspark.errors.NAME: message} (and an attestation denial's reason as {@code attestation
 * denial reason: CODE}), which {@code cipherspark.spark._errors} recovers from Spark's failure.
 */
public final class CipherSparkKmsClient implements KmsClient {

  /**
   * The Python interpreter cipherspark is installed in: a JVM system property of this name, else
   * the Hadoop property (the session sets it), else {@code PYSPARK_PYTHON}, else python3.
   */
  public static final String PYTHON_PROPERTY = "cipherspark.pme.python";

  /** The KMS URL a session without a KMS for Parquet sets: every key operation is refused. */
  public static final String NO_KMS = "cipherspark:no-kms";

  static final String HELPER_MODULE = "cipherspark.spark._pme_helper";
  static final String PROTOCOL = "cipherspark-pme 1";

  // Errors that mean "this caller may not have this key": Parquet's KeyAccessDeniedException,
  // so that a reader without a column's key still reads the other columns (PME's contract).
  private static final java.util.Set<String> DENIALS =
      java.util.Set.of(
          "CredentialsError",
          "PermissionDeniedError",
          "KeyNotFoundError",
          "KeyStateError",
          "AttestationError",
          "PolicyDeniedError");

  private static final AtomicLong WRAPS = new AtomicLong();
  private static final AtomicLong UNWRAPS = new AtomicLong();
  // One helper per interpreter per JVM: Parquet makes a client per access token and KMS
  // instance, and each would otherwise start its own Python process.
  private static final Map<String, Helper> HELPERS = new ConcurrentHashMap<>();

  private String kmsUrl;
  private Helper helper;

  @Override
  public void initialize(
      Configuration configuration, String kmsInstanceID, String kmsInstanceURL, String accessToken)
      throws KeyAccessDeniedException {
    if (kmsInstanceURL == null
        || kmsInstanceURL.isEmpty()
        || KMS_INSTANCE_URL_DEFAULT.equals(kmsInstanceURL)
        || NO_KMS.equals(kmsInstanceURL)) {
      throw new ParquetCryptoRuntimeException(
          "cipherspark.errors.UsageError: this Spark session has no KMS for Parquet encryption:"
              + " every Parquet file it writes is encrypted, so give it a KMS and a key (--kms,"
              + " --key or CIPHERSPARK_KMS, CIPHERSPARK_KEY), or write plaintext Parquet only"
              + " with the explicit opt-out (--unsafe-plaintext-parquet)");
    }
    this.kmsUrl = kmsInstanceURL;
    // A JVM system property first: in an enclave the measured launcher sets it, and then the
    // Hadoop conf, which the driver sends, cannot choose what this JVM executes.
    String python = System.getProperty(PYTHON_PROPERTY);
    if (python == null || python.isEmpty()) {
      python = configuration.getTrimmed(PYTHON_PROPERTY);
    }
    if (python == null || python.isEmpty()) {
      python = System.getenv("PYSPARK_PYTHON");
    }
    if (python == null || python.isEmpty()) {
      python = "python3";
    }
    this.helper = HELPERS.computeIfAbsent(python, Helper::new);
  }

  @Override
  public String wrapKey(byte[] keyBytes, String masterKeyIdentifier)
      throws KeyAccessDeniedException {
    WRAPS.incrementAndGet();
    byte[] wrapped = helper.call("wrap", kmsUrl, masterKeyIdentifier, keyBytes);
    return new String(wrapped, StandardCharsets.UTF_8);
  }

  @Override
  public byte[] unwrapKey(String wrappedKey, String masterKeyIdentifier)
      throws KeyAccessDeniedException {
    UNWRAPS.incrementAndGet();
    return helper.call(
        "unwrap", kmsUrl, masterKeyIdentifier, wrappedKey.getBytes(StandardCharsets.UTF_8));
  }

  /** Wrap calls this JVM made since it started (what Parquet asked of the KMS). */
  public static long wrapCalls() {
    return WRAPS.get();
  }

  /** Unwrap calls this JVM made since it started. */
  public static long unwrapCalls() {
    return UNWRAPS.get();
  }

  /** The helper child process and its two pipes; one request at a time. */
  static final class Helper {
    private final String python;
    private Process process;
    private BufferedWriter requests;
    private BufferedReader answers;

    Helper(String python) {
      this.python = python;
    }

    synchronized byte[] call(String op, String url, String masterKey, byte[] payload) {
      if (process == null || !process.isAlive()) {
        start();
      }
      String line;
      try {
        requests.write(op + " " + b64(url) + " " + b64(masterKey) + " " + b64(payload) + "\n");
        requests.flush();
        line = answers.readLine();
      } catch (IOException e) {
        line = null;
      }
      if (line == null) {
        throw exited("the PME key helper stopped answering");
      }
      return answer(line);
    }

    private void start() {
      ProcessBuilder builder = new ProcessBuilder(python, "-m", HELPER_MODULE);
      // The helper's diagnostics go where this JVM's go (the session's log); stdout is ours.
      builder.redirectError(ProcessBuilder.Redirect.INHERIT);
      try {
        process = builder.start();
      } catch (IOException e) {
        process = null;
        throw new ParquetCryptoRuntimeException(
            "cipherspark.errors.KmsUnavailableError: cannot start the PME key helper ("
                + python
                + " -m "
                + HELPER_MODULE
                + "): "
                + e.getMessage());
      }
      requests =
          new BufferedWriter(
              new OutputStreamWriter(process.getOutputStream(), StandardCharsets.US_ASCII));
      answers =
          new BufferedReader(
              new InputStreamReader(process.getInputStream(), StandardCharsets.US_ASCII));
      String hello;
      try {
        hello = answers.readLine();
      } catch (IOException e) {
        hello = null;
      }
      if (!PROTOCOL.equals(hello)) {
        throw exited("the PME key helper did not start");
      }
    }

    private ParquetCryptoRuntimeException exited(String what) {
      String code = "still running";
      if (process != null) {
        try {
          if (process.waitFor(2, TimeUnit.SECONDS)) {
            code = "exit code " + process.exitValue();
          }
        } catch (InterruptedException e) {
          Thread.currentThread().interrupt();
        }
        process.destroy();
        process = null;
      }
      return new ParquetCryptoRuntimeException(
          "cipherspark.errors.KmsUnavailableError: "
              + what
              + " ("
              + python
              + " -m "
              + HELPER_MODULE
              + ", "
              + code
              + "); its error is in the Spark log");
    }

    private static byte[] answer(String line) {
      String[] parts = line.split(" ", -1);
      if (parts.length == 2 && parts[0].equals("ok")) {
        return Base64.getDecoder().decode(parts[1]);
      }
      if (parts.length == 4 && parts[0].equals("error")) {
        String message =
            "cipherspark.errors."
                + parts[1]
                + ": "
                + new String(Base64.getDecoder().decode(parts[2]), StandardCharsets.UTF_8);
        if (!parts[3].equals("-")) {
          message += "\nattestation denial reason: " + parts[3];
        }
        if (DENIALS.contains(parts[1])) {
          throw new KeyAccessDeniedException(message);
        }
        throw new ParquetCryptoRuntimeException(message);
      }
      throw new ParquetCryptoRuntimeException(
          "cipherspark.errors.KmsError: the PME key helper answered something unexpected");
    }

    private static String b64(String text) {
      return b64(text.getBytes(StandardCharsets.UTF_8));
    }

    private static String b64(byte[] bytes) {
      return Base64.getEncoder().encodeToString(bytes);
    }
  }
}
