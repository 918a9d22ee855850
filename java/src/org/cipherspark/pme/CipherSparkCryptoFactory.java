/*
 * Licensed under the Apache License, Version 2.0 (see LICENSE at the repository root).
 */
package org.cipherspark.pme;

import java.nio.charset.StandardCharsets;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import org.apache.hadoop.conf.Configuration;
import org.apache.hadoop.fs.Path;
import org.apache.parquet.crypto.DecryptionKeyRetriever;
import org.apache.parquet.crypto.DecryptionPropertiesFactory;
import org.apache.parquet.crypto.EncryptionPropertiesFactory;
import org.apache.parquet.crypto.FileDecryptionProperties;
import org.apache.parquet.crypto.FileEncryptionProperties;
import org.apache.parquet.crypto.KeyAccessDeniedException;
import org.apache.parquet.crypto.ParquetCryptoRuntimeException;
import org.apache.parquet.crypto.keytools.PropertiesDrivenCryptoFactory;
import org.apache.parquet.hadoop.api.WriteSupport.WriteContext;

/**
 * Parquet's {@code PropertiesDrivenCryptoFactory}, except that a reader refuses what an
 * encrypted table must not contain, in the JVM that decrypts (every executor), file by file, as
 * it reads: no check made earlier on the driver can be raced by storage.
 *
 * <ul>
 *   <li><b>Plaintext files are refused.</b> {@code PropertiesDrivenCryptoFactory} allows them
 *       ({@code withPlaintextFilesAllowed}), so anyone who can write to the storage could add a
 *       plaintext file of their own rows to an encrypted table, or swap one in after a check.
 *       Parquet then fails the read with "Applying decryptor on plaintext file", which {@code
 *       cipherspark.spark._errors} reports as an integrity error naming the file. The explicit
 *       opt-out is the Hadoop property {@value #UNSAFE_PLAINTEXT_READS} (per read as a reader
 *       option, or per session).
 *   <li><b>The footer key can be pinned.</b> With the Hadoop property {@value #FOOTER_KEY} (set
 *       per read by {@code read_encrypted_parquet(key=...)}), a file whose footer is under
 *       another master key is refused before its key is asked for: a file of another table the
 *       caller may also read cannot be swapped in.
 * </ul>
 *
 * <p>Writes are {@code PropertiesDrivenCryptoFactory}'s, unchanged.
 */
public final class CipherSparkCryptoFactory
    implements EncryptionPropertiesFactory, DecryptionPropertiesFactory {

  /** Hadoop property: {@code true} lets this read (or session) read plaintext Parquet files. */
  public static final String UNSAFE_PLAINTEXT_READS = "cipherspark.pme.unsafe.plaintext.reads";

  /** Hadoop property: the master key every file's footer must be under. */
  public static final String FOOTER_KEY = "cipherspark.pme.footer.key";

  // The key material Parquet stores in each footer's key metadata (internal storage: JSON, see
  // parquet-java's KeyMaterial). Its parser is package-private, hence the two patterns.
  private static final Pattern IS_FOOTER = Pattern.compile("\"isFooterKey\"\\s*:\\s*true");
  private static final Pattern MASTER_KEY =
      Pattern.compile("\"masterKeyID\"\\s*:\\s*\"([^\"\\\\]{1,256})\"");

  private final PropertiesDrivenCryptoFactory delegate = new PropertiesDrivenCryptoFactory();

  @Override
  public FileEncryptionProperties getFileEncryptionProperties(
      Configuration fileHadoopConfig, Path tempFilePath, WriteContext fileWriteContext)
      throws ParquetCryptoRuntimeException {
    return delegate.getFileEncryptionProperties(fileHadoopConfig, tempFilePath, fileWriteContext);
  }

  @Override
  public FileDecryptionProperties getFileDecryptionProperties(
      Configuration hadoopConfig, Path filePath) throws ParquetCryptoRuntimeException {
    FileDecryptionProperties parquets = delegate.getFileDecryptionProperties(hadoopConfig, filePath);
    if (hadoopConfig.getBoolean(UNSAFE_PLAINTEXT_READS, false)) {
      return parquets;
    }
    DecryptionKeyRetriever retriever = parquets.getKeyRetriever();
    String footerKey = hadoopConfig.getTrimmed(FOOTER_KEY, "");
    if (!footerKey.isEmpty()) {
      retriever = new PinnedFooterKey(retriever, footerKey, String.valueOf(filePath));
    }
    // No withPlaintextFilesAllowed(): Parquet refuses a file without encryption metadata.
    return FileDecryptionProperties.builder().withKeyRetriever(retriever).build();
  }

  /** A key retriever that refuses a footer key other than the pinned one. */
  private static final class PinnedFooterKey implements DecryptionKeyRetriever {
    private final DecryptionKeyRetriever delegate;
    private final String footerKey;
    private final String file;

    PinnedFooterKey(DecryptionKeyRetriever delegate, String footerKey, String file) {
      this.delegate = delegate;
      this.footerKey = footerKey;
      this.file = file;
    }

    @Override
    public byte[] getKey(byte[] keyMetaData) throws KeyAccessDeniedException {
      String material = new String(keyMetaData, StandardCharsets.UTF_8);
      if (IS_FOOTER.matcher(material).find()) {
        Matcher master = MASTER_KEY.matcher(material);
        String found = master.find() ? master.group(1) : null;
        if (!footerKey.equals(found)) {
          // The key's name is not secret (it is stored in plaintext in the file) nor data.
          throw new ParquetCryptoRuntimeException(
              "cipherspark.errors.IntegrityError: Parquet file "
                  + file
                  + (found == null ? " names no footer key" : " is under key '" + found + "'")
                  + ", not '"
                  + footerKey
                  + "' (it may have been replaced by another file)");
        }
      }
      return delegate.getKey(keyMetaData);
    }
  }
}
