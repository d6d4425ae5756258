//! The gnostic `openapi.v2.Document` protobuf message (google/gnostic `openapiv2/OpenAPIv2.proto`,
//! the fields keelson fills), and its encoding from the v2 JSON document.
//!
//! client-go's `OpenAPISchema` asks `/openapi/v2` for
//! `application/com.github.proto-openapi.spec.v2@v1.0+protobuf` and decodes it with gnostic;
//! kubectl builds its models from it (kube-openapi `pkg/util/proto`). Vendor extensions are
//! `NamedAny`s whose `Any.yaml` is the value's text: JSON, which is YAML too.

use serde_json::Value;

/// The whole document.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Document {
    /// `"2.0"`.
    #[prost(string, tag = "1")]
    pub swagger: String,
    /// Title and version.
    #[prost(message, optional, tag = "2")]
    pub info: Option<Info>,
    /// Schemes.
    #[prost(string, repeated, tag = "5")]
    pub schemes: Vec<String>,
    /// Every path.
    #[prost(message, optional, tag = "8")]
    pub paths: Option<Paths>,
    /// Every definition.
    #[prost(message, optional, tag = "9")]
    pub definitions: Option<Definitions>,
}

/// `info`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Info {
    /// Title.
    #[prost(string, tag = "1")]
    pub title: String,
    /// Version.
    #[prost(string, tag = "2")]
    pub version: String,
}

/// `paths`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Paths {
    /// One entry per path.
    #[prost(message, repeated, tag = "2")]
    pub path: Vec<NamedPathItem>,
}

/// A path and its item.
#[derive(Clone, PartialEq, prost::Message)]
pub struct NamedPathItem {
    /// The path.
    #[prost(string, tag = "1")]
    pub name: String,
    /// Its operations.
    #[prost(message, optional, tag = "2")]
    pub value: Option<PathItem>,
}

/// The operations of a path.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PathItem {
    /// GET.
    #[prost(message, optional, tag = "2")]
    pub get: Option<Operation>,
    /// PUT.
    #[prost(message, optional, tag = "3")]
    pub put: Option<Operation>,
    /// POST.
    #[prost(message, optional, tag = "4")]
    pub post: Option<Operation>,
    /// DELETE.
    #[prost(message, optional, tag = "5")]
    pub delete: Option<Operation>,
    /// PATCH.
    #[prost(message, optional, tag = "8")]
    pub patch: Option<Operation>,
    /// Parameters of every operation.
    #[prost(message, repeated, tag = "9")]
    pub parameters: Vec<ParametersItem>,
}

/// One operation.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Operation {
    /// Tags.
    #[prost(string, repeated, tag = "1")]
    pub tags: Vec<String>,
    /// Description.
    #[prost(string, tag = "3")]
    pub description: String,
    /// `operationId`.
    #[prost(string, tag = "5")]
    pub operation_id: String,
    /// Response media types.
    #[prost(string, repeated, tag = "6")]
    pub produces: Vec<String>,
    /// Request media types.
    #[prost(string, repeated, tag = "7")]
    pub consumes: Vec<String>,
    /// Parameters.
    #[prost(message, repeated, tag = "8")]
    pub parameters: Vec<ParametersItem>,
    /// Responses.
    #[prost(message, optional, tag = "9")]
    pub responses: Option<Responses>,
    /// Schemes.
    #[prost(string, repeated, tag = "10")]
    pub schemes: Vec<String>,
    /// `x-kubernetes-action`, `x-kubernetes-group-version-kind`.
    #[prost(message, repeated, tag = "13")]
    pub vendor_extension: Vec<NamedAny>,
}

/// A parameter (never a reference here).
#[derive(Clone, PartialEq, prost::Message)]
pub struct ParametersItem {
    /// The parameter.
    #[prost(oneof = "ParametersItemOneof", tags = "1")]
    pub oneof: Option<ParametersItemOneof>,
}

/// `ParametersItem.oneof`.
#[derive(Clone, PartialEq, prost::Oneof)]
pub enum ParametersItemOneof {
    /// A parameter.
    #[prost(message, tag = "1")]
    Parameter(Parameter),
}

/// A body or non-body parameter.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Parameter {
    /// Which.
    #[prost(oneof = "ParameterOneof", tags = "1, 2")]
    pub oneof: Option<ParameterOneof>,
}

/// `Parameter.oneof`.
#[derive(Clone, PartialEq, prost::Oneof)]
pub enum ParameterOneof {
    /// The request body.
    #[prost(message, boxed, tag = "1")]
    BodyParameter(Box<BodyParameter>),
    /// A query or path parameter.
    #[prost(message, tag = "2")]
    NonBodyParameter(NonBodyParameter),
}

/// The request body parameter.
#[derive(Clone, PartialEq, prost::Message)]
pub struct BodyParameter {
    /// Description.
    #[prost(string, tag = "1")]
    pub description: String,
    /// `body`.
    #[prost(string, tag = "2")]
    pub name: String,
    /// `body`.
    #[prost(string, tag = "3")]
    pub r#in: String,
    /// Required.
    #[prost(bool, tag = "4")]
    pub required: bool,
    /// Its schema.
    #[prost(message, optional, tag = "5")]
    pub schema: Option<Schema>,
}

/// A query or path parameter.
#[derive(Clone, PartialEq, prost::Message)]
pub struct NonBodyParameter {
    /// Which.
    #[prost(oneof = "NonBodyParameterOneof", tags = "3, 4")]
    pub oneof: Option<NonBodyParameterOneof>,
}

/// `NonBodyParameter.oneof`.
#[derive(Clone, PartialEq, prost::Oneof)]
pub enum NonBodyParameterOneof {
    /// In the query.
    #[prost(message, tag = "3")]
    QueryParameterSubSchema(QueryParameter),
    /// In the path.
    #[prost(message, tag = "4")]
    PathParameterSubSchema(PathParameter),
}

/// `QueryParameterSubSchema`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct QueryParameter {
    /// Required.
    #[prost(bool, tag = "1")]
    pub required: bool,
    /// `query`.
    #[prost(string, tag = "2")]
    pub r#in: String,
    /// Description.
    #[prost(string, tag = "3")]
    pub description: String,
    /// Name.
    #[prost(string, tag = "4")]
    pub name: String,
    /// Type.
    #[prost(string, tag = "6")]
    pub r#type: String,
    /// `uniqueItems`.
    #[prost(bool, tag = "20")]
    pub unique_items: bool,
}

/// `PathParameterSubSchema`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PathParameter {
    /// Required.
    #[prost(bool, tag = "1")]
    pub required: bool,
    /// `path`.
    #[prost(string, tag = "2")]
    pub r#in: String,
    /// Description.
    #[prost(string, tag = "3")]
    pub description: String,
    /// Name.
    #[prost(string, tag = "4")]
    pub name: String,
    /// Type.
    #[prost(string, tag = "5")]
    pub r#type: String,
    /// `uniqueItems`.
    #[prost(bool, tag = "19")]
    pub unique_items: bool,
}

/// `responses`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Responses {
    /// By status code.
    #[prost(message, repeated, tag = "1")]
    pub response_code: Vec<NamedResponseValue>,
}

/// A status code and its response.
#[derive(Clone, PartialEq, prost::Message)]
pub struct NamedResponseValue {
    /// The code.
    #[prost(string, tag = "1")]
    pub name: String,
    /// The response.
    #[prost(message, optional, tag = "2")]
    pub value: Option<ResponseValue>,
}

/// A response (never a reference here).
#[derive(Clone, PartialEq, prost::Message)]
pub struct ResponseValue {
    /// The response.
    #[prost(oneof = "ResponseValueOneof", tags = "1")]
    pub oneof: Option<ResponseValueOneof>,
}

/// `ResponseValue.oneof`.
#[derive(Clone, PartialEq, prost::Oneof)]
pub enum ResponseValueOneof {
    /// A response.
    #[prost(message, tag = "1")]
    Response(Response),
}

/// One response.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Response {
    /// Description.
    #[prost(string, tag = "1")]
    pub description: String,
    /// Its body's schema.
    #[prost(message, optional, tag = "2")]
    pub schema: Option<SchemaItem>,
}

/// A response schema.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SchemaItem {
    /// The schema.
    #[prost(oneof = "SchemaItemOneof", tags = "1")]
    pub oneof: Option<SchemaItemOneof>,
}

/// `SchemaItem.oneof`.
#[derive(Clone, PartialEq, prost::Oneof)]
pub enum SchemaItemOneof {
    /// A schema.
    #[prost(message, tag = "1")]
    Schema(Schema),
}

/// `definitions`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Definitions {
    /// One per definition.
    #[prost(message, repeated, tag = "1")]
    pub additional_properties: Vec<NamedSchema>,
}

/// A name and a schema.
#[derive(Clone, PartialEq, prost::Message)]
pub struct NamedSchema {
    /// The name.
    #[prost(string, tag = "1")]
    pub name: String,
    /// The schema.
    #[prost(message, optional, tag = "2")]
    pub value: Option<Schema>,
}

/// A JSON schema.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Schema {
    /// `$ref`.
    #[prost(string, tag = "1")]
    pub r#ref: String,
    /// Format.
    #[prost(string, tag = "2")]
    pub format: String,
    /// Title.
    #[prost(string, tag = "3")]
    pub title: String,
    /// Description.
    #[prost(string, tag = "4")]
    pub description: String,
    /// Required properties.
    #[prost(string, repeated, tag = "19")]
    pub required: Vec<String>,
    /// `additionalProperties`.
    #[prost(message, optional, tag = "21")]
    pub additional_properties: Option<AdditionalPropertiesItem>,
    /// Type.
    #[prost(message, optional, tag = "22")]
    pub r#type: Option<TypeItem>,
    /// Items.
    #[prost(message, optional, tag = "23")]
    pub items: Option<ItemsItem>,
    /// `allOf`.
    #[prost(message, repeated, tag = "24")]
    pub all_of: Vec<Schema>,
    /// Properties.
    #[prost(message, optional, tag = "25")]
    pub properties: Option<Properties>,
    /// `x-` extensions.
    #[prost(message, repeated, tag = "31")]
    pub vendor_extension: Vec<NamedAny>,
}

/// `additionalProperties`: a schema or a boolean.
#[derive(Clone, PartialEq, prost::Message)]
pub struct AdditionalPropertiesItem {
    /// Which.
    #[prost(oneof = "AdditionalPropertiesOneof", tags = "1, 2")]
    pub oneof: Option<AdditionalPropertiesOneof>,
}

/// `AdditionalPropertiesItem.oneof`.
#[derive(Clone, PartialEq, prost::Oneof)]
pub enum AdditionalPropertiesOneof {
    /// A schema.
    #[prost(message, boxed, tag = "1")]
    Schema(Box<Schema>),
    /// A boolean.
    #[prost(bool, tag = "2")]
    Boolean(bool),
}

/// `type`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TypeItem {
    /// The type names.
    #[prost(string, repeated, tag = "1")]
    pub value: Vec<String>,
}

/// `items`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ItemsItem {
    /// The item schema.
    #[prost(message, repeated, tag = "1")]
    pub schema: Vec<Schema>,
}

/// `properties`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Properties {
    /// One per property.
    #[prost(message, repeated, tag = "1")]
    pub additional_properties: Vec<NamedSchema>,
}

/// A named value (vendor extensions).
#[derive(Clone, PartialEq, prost::Message)]
pub struct NamedAny {
    /// The name.
    #[prost(string, tag = "1")]
    pub name: String,
    /// The value.
    #[prost(message, optional, tag = "2")]
    pub value: Option<Any>,
}

/// A value as YAML text.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Any {
    /// The text.
    #[prost(string, tag = "2")]
    pub yaml: String,
}

fn text(value: &Value, key: &str) -> String {
    value
        .get(key)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

fn strings(value: &Value, key: &str) -> Vec<String> {
    value
        .get(key)
        .and_then(Value::as_array)
        .map(|items| {
            items
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

fn extensions(value: &Value) -> Vec<NamedAny> {
    value
        .as_object()
        .map(|object| {
            object
                .iter()
                .filter(|(key, _)| key.starts_with("x-"))
                .map(|(key, value)| NamedAny {
                    name: key.clone(),
                    value: Some(Any {
                        yaml: value.to_string(),
                    }),
                })
                .collect()
        })
        .unwrap_or_default()
}

/// A JSON schema as the message.
pub fn schema(value: &Value) -> Schema {
    let types = match value.get("type") {
        Some(Value::String(one)) => vec![one.clone()],
        Some(Value::Array(_)) => strings(value, "type"),
        _ => Vec::new(),
    };
    let named = |key: &str| -> Vec<NamedSchema> {
        value
            .get(key)
            .and_then(Value::as_object)
            .map(|object| {
                object
                    .iter()
                    .map(|(name, s)| NamedSchema {
                        name: name.clone(),
                        value: Some(schema(s)),
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    Schema {
        r#ref: text(value, "$ref"),
        format: text(value, "format"),
        title: text(value, "title"),
        description: text(value, "description"),
        required: strings(value, "required"),
        additional_properties: match value.get("additionalProperties") {
            Some(Value::Bool(b)) => Some(AdditionalPropertiesItem {
                oneof: Some(AdditionalPropertiesOneof::Boolean(*b)),
            }),
            Some(s @ Value::Object(_)) => Some(AdditionalPropertiesItem {
                oneof: Some(AdditionalPropertiesOneof::Schema(Box::new(schema(s)))),
            }),
            _ => None,
        },
        r#type: (!types.is_empty()).then_some(TypeItem { value: types }),
        items: value.get("items").map(|items| ItemsItem {
            schema: vec![schema(items)],
        }),
        all_of: value
            .get("allOf")
            .and_then(Value::as_array)
            .map(|all| all.iter().map(schema).collect())
            .unwrap_or_default(),
        properties: value.get("properties").map(|_| Properties {
            additional_properties: named("properties"),
        }),
        vendor_extension: extensions(value),
    }
}

fn parameter(value: &Value) -> ParametersItem {
    let place = text(value, "in");
    let parameter = if place == "body" {
        ParameterOneof::BodyParameter(Box::new(BodyParameter {
            description: text(value, "description"),
            name: text(value, "name"),
            r#in: place,
            required: value.get("required").and_then(Value::as_bool) == Some(true),
            schema: value.get("schema").map(schema),
        }))
    } else {
        let required = value.get("required").and_then(Value::as_bool) == Some(true);
        let unique_items = value.get("uniqueItems").and_then(Value::as_bool) == Some(true);
        let inner = if place == "path" {
            NonBodyParameterOneof::PathParameterSubSchema(PathParameter {
                required,
                r#in: place,
                description: text(value, "description"),
                name: text(value, "name"),
                r#type: text(value, "type"),
                unique_items,
            })
        } else {
            NonBodyParameterOneof::QueryParameterSubSchema(QueryParameter {
                required,
                r#in: place,
                description: text(value, "description"),
                name: text(value, "name"),
                r#type: text(value, "type"),
                unique_items,
            })
        };
        ParameterOneof::NonBodyParameter(NonBodyParameter { oneof: Some(inner) })
    };
    ParametersItem {
        oneof: Some(ParametersItemOneof::Parameter(Parameter {
            oneof: Some(parameter),
        })),
    }
}

fn parameters(value: &Value) -> Vec<ParametersItem> {
    value
        .get("parameters")
        .and_then(Value::as_array)
        .map(|params| params.iter().map(parameter).collect())
        .unwrap_or_default()
}

fn operation(value: &Value) -> Operation {
    let responses = value
        .get("responses")
        .and_then(Value::as_object)
        .map(|responses| Responses {
            response_code: responses
                .iter()
                .map(|(code, response)| NamedResponseValue {
                    name: code.clone(),
                    value: Some(ResponseValue {
                        oneof: Some(ResponseValueOneof::Response(Response {
                            description: text(response, "description"),
                            schema: response.get("schema").map(|s| SchemaItem {
                                oneof: Some(SchemaItemOneof::Schema(schema(s))),
                            }),
                        })),
                    }),
                })
                .collect(),
        });
    Operation {
        tags: strings(value, "tags"),
        description: text(value, "description"),
        operation_id: text(value, "operationId"),
        produces: strings(value, "produces"),
        consumes: strings(value, "consumes"),
        parameters: parameters(value),
        responses,
        schemes: strings(value, "schemes"),
        vendor_extension: extensions(value),
    }
}

/// The v2 JSON document as the gnostic message.
pub fn document(v2: &Value) -> Document {
    let paths = v2
        .get("paths")
        .and_then(Value::as_object)
        .map(|paths| Paths {
            path: paths
                .iter()
                .map(|(path, item)| NamedPathItem {
                    name: path.clone(),
                    value: Some(PathItem {
                        get: item.get("get").map(operation),
                        put: item.get("put").map(operation),
                        post: item.get("post").map(operation),
                        delete: item.get("delete").map(operation),
                        patch: item.get("patch").map(operation),
                        parameters: parameters(item),
                    }),
                })
                .collect(),
        });
    let definitions = v2
        .get("definitions")
        .and_then(Value::as_object)
        .map(|definitions| Definitions {
            additional_properties: definitions
                .iter()
                .map(|(name, s)| NamedSchema {
                    name: name.clone(),
                    value: Some(schema(s)),
                })
                .collect(),
        });
    Document {
        swagger: text(v2, "swagger"),
        info: v2.get("info").map(|info| Info {
            title: text(info, "title"),
            version: text(info, "version"),
        }),
        schemes: strings(v2, "schemes"),
        paths,
        definitions,
    }
}

/// The v2 JSON document encoded as the gnostic protobuf.
pub fn encode(v2: &Value) -> Vec<u8> {
    prost::Message::encode_to_vec(&document(v2))
}
