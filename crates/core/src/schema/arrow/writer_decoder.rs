//! The decoder of one writer schema id: rebuilt after a failing record, replaying the good ones.

use std::sync::Arc;

use arrow_avro::errors::AvroError;
use arrow_avro::reader::Decoder;

use super::decoder::{DecodeOutput, DecodedBatch, Pending};
use super::error::CodecError;
use super::stream::{Failure, build_decoder, feed};
use crate::schema::bounded::DatumBound;

/// Zero bytes appended to a failing payload to learn whether its body was cut short.
const TRUNCATION_PROBE_PADDING: usize = 4096;

/// The `arrow-avro` decoder of one writer schema id, and what it takes to rebuild it.
#[derive(Debug)]
pub(super) struct WriterDecoder {
    pub(super) id: u32,
    pub(super) schema_json: Arc<str>,
    pub(super) reader_schema: Option<Arc<str>>,
    pub(super) batch_size: usize,
    /// `None` only when rebuilding failed (never expected: it succeeded once at registration).
    pub(super) decoder: Option<Decoder>,
    /// The checks a record of this schema must pass before `arrow-avro` sees it, when its
    /// schema allows records that claim more than their bytes hold.
    pub(super) bound: Option<DatumBound>,
}

impl WriterDecoder {
    fn build(&self, batch_size: usize) -> Result<Decoder, CodecError> {
        build_decoder(
            self.id,
            &self.schema_json,
            self.reader_schema.as_deref(),
            batch_size,
        )
    }

    pub(super) fn rebuild(&mut self) -> Result<(), CodecError> {
        self.decoder = None;
        self.decoder = Some(self.build(self.batch_size)?);
        Ok(())
    }

    pub(super) fn is_empty(&self) -> bool {
        self.decoder
            .as_ref()
            .is_some_and(|d| d.capacity() == d.batch_size())
    }

    /// Feeds one framed payload (prefix checked, own id) to the decoder; returns whether the
    /// batch is now full.
    pub(super) fn feed(&mut self, payload: &[u8]) -> Result<bool, Failure> {
        if self.decoder.is_none() {
            self.rebuild()
                .map_err(|e| Failure::Body(AvroError::General(e.to_string())))?;
        }
        let decoder = self
            .decoder
            .as_mut()
            .ok_or_else(|| Failure::Body(AvroError::General("no decoder".to_owned())))?;
        feed(decoder, payload)?;
        Ok(decoder.capacity() == 0)
    }

    /// Turns a failure into the error reported for the payload. A body error is reported as
    /// [`CodecError::Truncated`] when the body decodes once zero bytes are appended to it (the
    /// body was cut short: `arrow-avro` reports a varint cut at the end of the input as a "bad
    /// varint", not as an end of input).
    pub(super) fn classify(&self, failure: Failure, payload: &[u8]) -> CodecError {
        let Failure::Body(error) = failure else {
            return failure.into_error();
        };
        let Ok(mut probe) = self.build(1) else {
            return CodecError::Avro(error.to_string());
        };
        let mut padded = Vec::with_capacity(payload.len() + TRUNCATION_PROBE_PADDING);
        padded.extend_from_slice(payload);
        padded.resize(payload.len() + TRUNCATION_PROBE_PADDING, 0);
        let before = probe.capacity();
        let result = probe.decode(&padded);
        if before > probe.capacity() || result.is_ok() {
            CodecError::Truncated
        } else {
            CodecError::Avro(error.to_string())
        }
    }

    /// Rebuilds the decoder after a failure and feeds it the good records of the batch again.
    pub(super) fn recover(&mut self, pending: &mut Pending<'_>, out: &mut DecodeOutput) {
        loop {
            if let Err(error) = self.rebuild() {
                fail_all(pending, &error, out);
                return;
            }
            pending.replayed += pending.payloads.len();
            let mut failed = None;
            if let Some(decoder) = self.decoder.as_mut() {
                for (k, payload) in pending.payloads.iter().enumerate() {
                    if let Err(failure) = feed(decoder, payload) {
                        failed = Some((k, failure));
                        break;
                    }
                }
            }
            // A record that decoded once fails again: never expected, but drop it and retry.
            let Some((k, failure)) = failed else {
                return;
            };
            let index = pending.indices.remove(k);
            pending.payloads.remove(k);
            out.errors.push((index, failure.into_error()));
        }
    }

    /// Flushes the decoder into a batch of the pending records.
    pub(super) fn finish(&mut self, pending: Pending<'_>, out: &mut DecodeOutput) {
        let flushed = match self.decoder.as_mut() {
            Some(decoder) => decoder.flush(),
            None => Err(AvroError::General("no decoder".to_owned())),
        };
        match flushed {
            Ok(Some(batch)) if batch.num_rows() == pending.indices.len() => {
                out.batches.push(DecodedBatch {
                    schema_id: self.id,
                    batch,
                    rows: pending.indices,
                });
            }
            Ok(_) => {
                let error = CodecError::Arrow("decoder lost track of its rows".to_owned());
                self.isolate(pending, &error, out);
            }
            Err(error) => {
                let error = CodecError::Arrow(error.to_string());
                self.isolate(pending, &error, out);
            }
        }
    }

    /// Building a batch failed: finds the records responsible by building a one-row batch of
    /// each, then builds the batch of the others.
    fn isolate(&mut self, pending: Pending<'_>, batch_error: &CodecError, out: &mut DecodeOutput) {
        let mut good = Pending::new(pending.id);
        for (index, payload) in pending.indices.into_iter().zip(pending.payloads) {
            if let Err(error) = self.rebuild() {
                out.errors.push((index, error));
                continue;
            }
            let Some(decoder) = self.decoder.as_mut() else {
                continue;
            };
            let result = match feed(decoder, payload) {
                Err(failure) => Err(failure.into_error()),
                Ok(()) => match decoder.flush() {
                    Ok(Some(batch)) if batch.num_rows() == 1 => Ok(()),
                    Ok(_) => Err(batch_error.clone()),
                    Err(error) => Err(CodecError::Arrow(error.to_string())),
                },
            };
            match result {
                Ok(()) => good.push(index, payload),
                Err(error) => out.errors.push((index, error)),
            }
        }
        if good.indices.is_empty() {
            // Leave a clean decoder behind.
            if let Err(error) = self.rebuild() {
                fail_all(&mut good, &error, out);
            }
            return;
        }
        if let Err(error) = self.rebuild() {
            fail_all(&mut good, &error, out);
            return;
        }
        let batch = match self.decoder.as_mut() {
            Some(decoder) => good
                .payloads
                .iter()
                .try_for_each(|payload| feed(decoder, payload))
                .map_err(Failure::into_error)
                .and_then(|()| {
                    decoder
                        .flush()
                        .map_err(|e| CodecError::Arrow(e.to_string()))
                }),
            None => Err(batch_error.clone()),
        };
        match batch {
            Ok(Some(batch)) if batch.num_rows() == good.indices.len() => {
                out.batches.push(DecodedBatch {
                    schema_id: self.id,
                    batch,
                    rows: good.indices,
                });
            }
            Ok(_) => {
                fail_all(&mut good, batch_error, out);
                let _ = self.rebuild();
            }
            Err(error) => {
                fail_all(&mut good, &error, out);
                let _ = self.rebuild();
            }
        }
    }
}

/// Reports every pending record with `error` and forgets them.
fn fail_all(pending: &mut Pending<'_>, error: &CodecError, out: &mut DecodeOutput) {
    pending.payloads.clear();
    out.errors
        .extend(pending.indices.drain(..).map(|i| (i, error.clone())));
}
