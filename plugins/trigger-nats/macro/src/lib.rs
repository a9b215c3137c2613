//! `#[nats_component]`: exports a function as the component's NATS handler
//! (`spin-nats:trigger`, the trigger-nats plugin's guest world). Use it
//! through `trigger_nats_sdk`. The expansion generates the world's bindings
//! in the component's crate from the plugin's WIT, read here at build time
//! (the one copy, `plugins/trigger-nats/wit`).

use proc_macro::TokenStream;
use proc_macro2::TokenStream as Tokens;
use quote::quote;
use syn::{FnArg, GenericArgument, ItemFn, PathArguments, ReturnType, Type, parse_macro_input};

/// The plugin's guest world.
const WIT: &str = include_str!("../../wit/trigger.wit");

/// Which export a handler's signature asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Shape {
    /// `fn(Message) -> Result<(), E>`: `handle-message`, one message per call.
    Single,
    /// `fn(Vec<Message>) -> Vec<Result<(), E>>`: `handle-batch`.
    Batch,
}

/// The last path segment of `ty` and its one generic type argument, if any.
fn last_segment(ty: &Type) -> Option<(String, Option<&Type>)> {
    let Type::Path(p) = ty else { return None };
    let seg = p.path.segments.last()?;
    let arg = match &seg.arguments {
        PathArguments::AngleBracketed(a) => a.args.iter().find_map(|g| match g {
            GenericArgument::Type(t) => Some(t),
            _ => None,
        }),
        _ => None,
    };
    Some((seg.ident.to_string(), arg))
}

/// The export `f`'s signature asks for, or what is wrong with it.
fn shape(f: &ItemFn) -> Result<Shape, String> {
    const EXPECTED: &str = "#[nats_component] expects `fn(Message) -> Result<(), E>` or `fn(Vec<Message>) -> Vec<Result<(), E>>`";
    if f.sig.asyncness.is_some() {
        return Err(format!(
            "{EXPECTED}, not an async fn (the guest world's exports are plain functions)"
        ));
    }
    if !f.sig.generics.params.is_empty() {
        return Err(format!("{EXPECTED}, without generic parameters"));
    }
    let inputs: Vec<&FnArg> = f.sig.inputs.iter().collect();
    let [FnArg::Typed(arg)] = inputs.as_slice() else {
        return Err(format!("{EXPECTED}: one argument"));
    };
    let ReturnType::Type(_, ret) = &f.sig.output else {
        return Err(format!("{EXPECTED}: it must return the outcome"));
    };
    match (last_segment(&arg.ty), last_segment(ret)) {
        (Some((a, None)), Some((r, _))) if a == "Message" && r == "Result" => Ok(Shape::Single),
        (Some((a, Some(inner))), Some((r, Some(item))))
            if a == "Vec"
                && r == "Vec"
                && last_segment(inner).is_some_and(|(m, _)| m == "Message")
                && last_segment(item).is_some_and(|(res, _)| res == "Result") =>
        {
            Ok(Shape::Batch)
        }
        _ => Err(EXPECTED.to_owned()),
    }
}

fn expand(f: ItemFn) -> Tokens {
    let shape = match shape(&f) {
        Ok(s) => s,
        Err(message) => {
            return syn::Error::new_spanned(&f.sig, message).to_compile_error();
        }
    };
    let name = &f.sig.ident;
    let sdk = quote!(::trigger_nats_sdk::__private);
    let (world, glue) = match shape {
        Shape::Single => (
            "nats-trigger",
            quote! {
                impl Guest for Component {
                    fn handle_message(
                        m: spin_nats::trigger::types::Message,
                    ) -> ::core::result::Result<(), spin_nats::trigger::types::Error> {
                        let message = #sdk::message(m.subject, m.payload, m.headers, m.reply_to, None);
                        super::#name(message)
                            .map_err(|e| spin_nats::trigger::types::Error::Other(#sdk::describe(e)))
                    }
                }
            },
        ),
        Shape::Batch => (
            "nats-batch-trigger",
            quote! {
                impl Guest for Component {
                    fn handle_batch(
                        batch: ::std::vec::Vec<spin_nats::trigger::types::Delivery>,
                    ) -> ::std::vec::Vec<::core::result::Result<(), spin_nats::trigger::types::Error>> {
                        let messages = batch
                            .into_iter()
                            .map(|d| {
                                let stream = d.jetstream.map(|j| (j.sequence, j.delivered, j.published_ms));
                                let m = d.message;
                                #sdk::message(m.subject, m.payload, m.headers, m.reply_to, stream)
                            })
                            .collect();
                        super::#name(messages)
                            .into_iter()
                            .map(|r| r.map_err(|e| spin_nats::trigger::types::Error::Other(#sdk::describe(e))))
                            .collect()
                    }
                }
            },
        ),
    };
    quote! {
        #f

        /// The `spin-nats:trigger` bindings and export of this component.
        #[doc(hidden)]
        #[allow(unsafe_code, missing_docs, clippy::all)]
        mod __trigger_nats {
            ::trigger_nats_sdk::__private::wit_bindgen::generate!({
                inline: #WIT,
                world: #world,
                runtime_path: "::trigger_nats_sdk::__private::wit_bindgen::rt",
            });

            struct Component;

            #glue

            export!(Component);
        }
    }
}

/// Exports the function as the component's NATS handler.
///
/// - `fn(Message) -> Result<(), E>` exports `handle-message` (one call per message);
/// - `fn(Vec<Message>) -> Vec<Result<(), E>>` exports `handle-batch` (one call per
///   JetStream pull), one outcome per message, in order.
///
/// `E` is `trigger_nats_sdk::Error` or anything that implements `Display`.
#[proc_macro_attribute]
pub fn nats_component(attr: TokenStream, item: TokenStream) -> TokenStream {
    if !attr.is_empty() {
        return syn::Error::new(
            proc_macro2::Span::call_site(),
            "#[nats_component] takes no arguments",
        )
        .to_compile_error()
        .into();
    }
    expand(parse_macro_input!(item as ItemFn)).into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use syn::parse_quote;

    #[test]
    fn signatures_choose_the_export() {
        let single: ItemFn = parse_quote!(
            fn handle(m: Message) -> Result<(), Error> {
                Ok(())
            }
        );
        assert_eq!(shape(&single), Ok(Shape::Single));
        let qualified: ItemFn = parse_quote!(
            fn handle(m: trigger_nats_sdk::Message) -> anyhow::Result<()> {
                Ok(())
            }
        );
        assert_eq!(shape(&qualified), Ok(Shape::Single));
        let batch: ItemFn = parse_quote!(
            fn handle(b: Vec<Message>) -> Vec<Result<(), String>> {
                vec![]
            }
        );
        assert_eq!(shape(&batch), Ok(Shape::Batch));
    }

    #[test]
    fn other_signatures_are_refused_with_what_is_expected() {
        let refused: [ItemFn; 6] = [
            parse_quote!(
                fn handle(m: u32) -> Result<(), Error> {
                    Ok(())
                }
            ),
            parse_quote!(
                fn handle(m: Message) {}
            ),
            parse_quote!(
                fn handle(a: Message, b: Message) -> Result<(), Error> {
                    Ok(())
                }
            ),
            parse_quote!(
                async fn handle(m: Message) -> Result<(), Error> {
                    Ok(())
                }
            ),
            parse_quote!(
                fn handle(b: Vec<Message>) -> Result<(), Error> {
                    Ok(())
                }
            ),
            parse_quote!(
                fn handle<T>(m: Message) -> Result<(), Error> {
                    Ok(())
                }
            ),
        ];
        for f in refused {
            let e = shape(&f).err();
            assert!(
                e.as_deref()
                    .is_some_and(|e| e.starts_with("#[nats_component] expects")),
                "{e:?}"
            );
        }
    }

    #[test]
    fn the_expansion_keeps_the_function_and_exports_it() {
        let out = expand(parse_quote!(
            fn handle(m: Message) -> Result<(), Error> {
                Ok(())
            }
        ))
        .to_string();
        assert!(out.contains("fn handle"), "{out}");
        assert!(
            out.contains("handle_message") && out.contains("\"nats-trigger\""),
            "{out}"
        );
        let batch = expand(parse_quote!(
            fn handle(b: Vec<Message>) -> Vec<Result<(), Error>> {
                vec![]
            }
        ))
        .to_string();
        assert!(
            batch.contains("handle_batch") && batch.contains("\"nats-batch-trigger\""),
            "{batch}"
        );
        let bad = expand(parse_quote!(
            fn handle(m: u32) {}
        ))
        .to_string();
        assert!(bad.contains("compile_error"), "{bad}");
    }
}
